"""Lockstep deployment: real simulator, a tiny policy, the scripted operator, bags, the real converter."""

import h5py
import numpy as np
import pytest

from apo_bench.deploy import LockstepDeployment
from apo_core.normalization import ActionStats
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_sim.env import SimEnv
from apo_trainer.convert import convert_bags

pytestmark = pytest.mark.sim

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


@pytest.fixture(scope="module")
def env():
    e = SimEnv("Lift", image_size=32)
    yield e
    e.close()


@pytest.fixture(scope="module")
def policy():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(200, 7))
    a[:, -1] = np.sign(a[:, -1])
    p = SmallVLAPolicy.create(ActionStats.from_actions(a), seed=3, **TINY)
    p.version = "v0001"
    return p


def test_operator_takes_over_a_random_policy_and_bags_convert(env, policy, tmp_path):
    bags = tmp_path / "bags"
    deploy = LockstepDeployment(env, policy, max_steps=80, bags_dir=bags)
    results = [deploy.run_episode(seed) for seed in (5, 6)]
    for r in results:
        assert r.takeovers >= 1, r  # a random policy stalls: the operator must step in
        assert 0 < r.human_steps < r.steps
        assert r.outcome in ("success", "failure")
    report = convert_bags(bags, tmp_path / "interactive.h5", k=10, progress=False)
    assert [b.status for b in report.bags] == ["added", "added"]  # clean bags, nothing recovered
    with h5py.File(tmp_path / "interactive.h5", "r") as f:
        names = sorted(f["data"])
        assert len(names) == 2
        for name, r in zip(names, results, strict=True):
            g = f["data"][name]
            live = g["live_labels"][()]
            labels = g["labels"][()]
            assert len(live) == r.steps, (len(live), r.steps)  # no step lost between tick and dataset
            assert int((live == 2).sum()) == r.human_steps
            assert (labels == 0).sum() > 0  # the K-window marked the steps before the takeover
            assert g["obs/image"].shape[1:] == (32, 32, 3)
            assert g.attrs["outcome"] == r.outcome


def test_same_seed_same_episode(env, policy, tmp_path):
    deploy = LockstepDeployment(env, policy, max_steps=40, bags_dir=None)
    a, b = deploy.run_episode(11), deploy.run_episode(11)
    assert (a.steps, a.human_steps, a.takeovers, a.outcome) == (b.steps, b.human_steps, b.takeovers, b.outcome)


def test_policy_alone_has_no_human_steps(env, policy):
    deploy = LockstepDeployment(env, policy, max_steps=30, bags_dir=None, operator=False)
    r = deploy.run_episode(3)
    assert r.human_steps == 0 and r.takeovers == 0 and r.steps == 30 and r.outcome == "failure"
