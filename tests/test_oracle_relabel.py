"""bench/oracle_relabel.py on a real deployment: a tiny random policy deployed on Lift with the scripted operator
(lockstep, bags, the real converter), then every step relabelled with the scripted expert's action."""

import importlib.util
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from apo_bench.deploy import LockstepDeployment
from apo_core.labels import MODE_HUMAN, Label
from apo_core.normalization import ActionStats
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_sim.env import SimEnv
from apo_trainer.convert import convert_bags
from apo_trainer.data import HUMAN, StepDataset

pytestmark = pytest.mark.sim

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


def _tool():
    sys.path.insert(0, str(BENCH))  # the tool imports bench/label_audit.py beside it
    spec = importlib.util.spec_from_file_location("oracle_relabel", BENCH / "oracle_relabel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(200, 7))
    a[:, -1] = np.sign(a[:, -1])
    policy = SmallVLAPolicy.create(ActionStats.from_actions(a), seed=3, state_dim=9, **TINY)
    with SimEnv("Lift", image_size=32) as env:
        LockstepDeployment(env, policy, max_steps=60, bags_dir=root / "bags").run_episode(5)
        LockstepDeployment(env, policy, max_steps=60, bags_dir=root / "bags").run_episode(6)
    report = convert_bags(root / "bags", root / "interactive.h5", k=10, progress=False)
    assert [b.status for b in report.bags] == ["added", "added"]
    return root / "interactive.h5"


def _episodes(path: Path) -> dict[str, dict]:
    with h5py.File(path, "r") as f:
        return {name: {key: f["data"][name][key][()] for key in ("actions", "labels", "live_labels", "modes",
                                                                 "policy_actions", "obs/state", "obs/image")}
                for name in f["data"]}


def test_every_step_gets_the_experts_action_and_a_human_label(deployment, tmp_path):
    tool = _tool()
    out = tmp_path / "oracle.h5"
    checks = tool.relabel(deployment, out)
    before, after = _episodes(deployment), _episodes(out)
    assert checks["episodes"] == 2 and checks["left_out"] == [] and checks["human_command_mismatches"] == 0
    assert checks["steps"] == sum(len(e["labels"]) for e in before.values())  # lockstep: no HOLD steps
    assert set(after) == set(before)
    for name, old in before.items():
        new = after[name]
        human = old["live_labels"] == Label.HUMAN
        assert 0 < human.sum() < len(human)  # the operator drove some steps, the random policy the others
        # The operator is the expert (through the joystick path: equal to float rounding).
        np.testing.assert_allclose(new["actions"][human], old["actions"][human], rtol=0, atol=1e-9)
        # On the policy's own steps the expert's actions replace the random policy's commands.
        assert not np.allclose(new["actions"][~human], old["actions"][~human])
        assert np.all(np.abs(new["actions"]) <= 1.0)
        assert np.all(new["labels"] == Label.HUMAN) and np.all(new["live_labels"] == Label.HUMAN)
        assert np.all(new["modes"] == MODE_HUMAN)
        for key in ("policy_actions", "obs/state", "obs/image"):
            np.testing.assert_array_equal(new[key], old[key])
    data = StepDataset([out], k=10)
    assert len(data) == checks["steps"] and np.all(data.kinds == HUMAN)


def test_an_episode_whose_replay_leaves_its_record_is_left_out_and_named(deployment, tmp_path):
    tool = _tool()
    tampered = tmp_path / "tampered.h5"
    shutil.copyfile(deployment, tampered)
    with h5py.File(tampered, "r+") as f:
        first = sorted(f["data"])[0]
        f["data"][first]["obs/state"][5, 0] += 0.01  # the recorded hand 1 cm off where the replay puts it
        eid = str(f["data"][first].attrs["episode_id"])
    checks = tool.relabel(tampered, tmp_path / "oracle.h5")
    assert checks["episodes"] == 1 and [e["episode"] for e in checks["left_out"]] == [eid]
    assert len(_episodes(tmp_path / "oracle.h5")) == 1


def test_an_operator_step_that_is_not_the_experts_action_fails_the_run(deployment, tmp_path, capsys):
    tool = _tool()
    tampered = tmp_path / "tampered.h5"
    shutil.copyfile(deployment, tampered)
    with h5py.File(tampered, "r+") as f:
        g = f["data"][sorted(f["data"])[0]]
        actions = g["actions"][()]
        # An operator command at the controller's limit, recorded beyond it: the simulator clips it to the same
        # input, so the replay stays on the record, but the recorded command is no longer the expert's action.
        at_limit = np.argwhere((g["live_labels"][()][:, None] == Label.HUMAN) & (np.abs(actions) == 1.0))
        assert len(at_limit), "no operator command at the limit in this deployment"
        t, d = at_limit[0]
        actions[t, d] *= 1.5
        g["actions"][...] = actions
    assert tool.main([str(tampered), str(tmp_path / "oracle.h5")]) == 1
    assert "operator steps differ from the expert's action" in capsys.readouterr().err
