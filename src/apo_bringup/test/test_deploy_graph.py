"""The whole deploy graph from config/deploy.yaml as separate processes (the runner apo deploy uses): the real
simulator, a random-init policy, the scripted operator through the joystick path, the arbiter and the
recorder, over real DDS. Checks what the recorded bags say happened."""

import numpy as np
import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from apo_bringup.runner import GraphRunner
from apo_bringup.session import DeploySession
from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_recorder.reader import iter_messages, list_episode_bags, read_bag_info
from apo_trainer.testing import tiny_policy

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
SOURCE_TELEOP, SOURCE_HOLD = 1, 3
MODE_HUMAN = 1


def _store(tmp_path):
    q = np.full(7, 1.0)
    store = ModelStore(tmp_path / "models")
    # wide statistics: the random policy moves a lot, so the operator has something to correct
    store.add(tiny_policy(ActionStats(q01=-q, q99=q, mask=[True] * 6 + [False]), state_dim=9, seed=3)
              .save(tmp_path / "p"))
    return store


def _args(tmp_path, **extra):
    return {"robot": "sim", "task": "Lift", "model_path": str(tmp_path / "models"), "bags_dir": str(tmp_path / "bags"),
            "record": True, "operator": "scripted", "operator_autostart": False, "image_size": 48,
            "max_episode_steps": 40, "retrain": False, **extra}


def test_episodes_are_recorded_and_labelled(tmp_path):
    _store(tmp_path)
    specs = resolve_graph(load_graph_file(default_graph_path()), _args(tmp_path))
    assert {s.name for s in specs} == {"apo_sim", "apo_policy", "apo_arbiter", "apo_scripted_operator",
                                       "apo_joy_teleop", "apo_recorder"}
    runner = GraphRunner(specs, log_dir=tmp_path / "logs", echo=False)
    runner.start()
    session = None
    try:
        session = DeploySession(tmp_path / "bags")
        session.wait_ready(timeout=180)
        # The node's diagnostics name the loaded model before any episode (no camera frame needed).
        session.wait_policy_loaded("v0001", timeout=180)
        assert session.loaded_version == "v0001"
        results = [session.run_episode("lift the red cube", timeout=120) for _ in range(3)]
    finally:
        if session is not None:
            session.close()
        codes = runner.stop()
    assert runner.poll() is None, f"a required node died: {runner.failed}"
    assert all(code in (0, -2, 130) for code in codes.values()), codes

    bags = list_episode_bags(tmp_path / "bags")
    assert sorted(b.name for b in bags) == sorted(r.episode_id for r in results)
    human_total = 0
    for r in results:
        info = read_bag_info(r.bag)
        assert info.episode_id == r.episode_id and info.outcome == r.outcome
        assert info.instruction == "lift the red cube" and info.policy_version == "v0001"
        steps = [m.msg for m in iter_messages(r.bag, [topics.STEP])]
        commands = {(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec): m.msg
                    for m in iter_messages(r.bag, [topics.COMMAND])}
        # no step lost: contiguous indices from 0
        assert [s.step_index for s in steps] == list(range(len(steps))) and len(steps) > 0
        for s in steps:
            cmd = commands.get((s.header.stamp.sec, s.header.stamp.nanosec))
            assert cmd is not None, f"no command for step {s.step_index}"
            assert np.allclose(cmd.action, s.executed_action)
            # label 2 exactly on the steps the operator (teleop input) drove, 1 elsewhere
            assert (s.label == 2) == (cmd.source == SOURCE_TELEOP) == (s.mode == MODE_HUMAN)
            assert s.label in (1, 2) and np.all(np.isfinite(s.executed_action))
            assert np.all(np.abs(s.executed_action) <= 1.0)
        human_total += sum(s.label == 2 for s in steps)
        # the operator acted through the joystick path: its Joy messages are in the bag
        if any(s.label == 2 for s in steps):
            assert any(True for _ in iter_messages(r.bag, [topics.JOY]))
    # a random policy gets corrected
    assert human_total > 0
