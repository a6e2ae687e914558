"""``policy_architecture``: the bench's base BC trains the chosen architecture, and every later cell
(deployment, a method's retraining, evaluation) runs that policy. Real simulator, tiny models, tiny budgets."""

import json

import pytest

from apo_bench.protocol import Protocol
from apo_bench.settings import load_bench_settings
from apo_core.config import ConfigError
from apo_core.policy import load_policy
from apo_core.policy.chunked_vla import ChunkedVLAPolicy
from apo_trainer.testing import TINY_POLICY_SECTION

pytestmark = pytest.mark.sim


def _settings(**overrides):
    return load_bench_settings("quick", overrides={
        "image_size": 32, "max_steps": {"Lift": 5}, "demos": {"episodes": 1},
        "bc": {"steps": 2, "batch_size": 4, "overrides": {"policy": {**TINY_POLICY_SECTION, "fast_vocab_size": 64}}},
        "deploy": {"episodes": 1}, "eval": {"episodes": 2, "workers": 2},
        "methods": {"apo": {"loss": "apo", "overrides": {"train": {"max_steps": 2, "batch_size": 4}}}},
        "lifelong": {"methods": ["apo"]}, "perturbations": {"methods": ["base", "apo"]}, **overrides})


def test_the_default_is_the_small_vla_and_bad_values_are_refused():
    s = load_bench_settings("quick")
    assert (s.policy_architecture, s.chunk_horizon) == ("small_vla", 8)
    with pytest.raises(ConfigError, match=r"policy_architecture: unknown 'pi0'.*chunked_vla"):
        load_bench_settings("quick", overrides={"policy_architecture": "pi0"})
    with pytest.raises(ConfigError, match="chunk_horizon must be an integer >= 1, got 0"):
        load_bench_settings("quick", overrides={"policy_architecture": "chunked_vla", "chunk_horizon": 0})


def test_a_chunked_run_trains_deploys_retrains_and_evaluates_the_chunked_vla(tmp_path):
    settings = _settings(policy_architecture="chunked_vla", chunk_horizon=4)
    with Protocol(settings, tmp_path, progress=False) as protocol:
        protocol.collect("Lift", 0)
        protocol.train_base("Lift", 0)
        base_dir = protocol.policy_dir("Lift", 0, "base")
        meta = json.loads((base_dir / "apo_policy.json").read_text())
        assert (meta["kind"], meta["horizon"], meta["version"]) == ("chunked_vla", 4, "base")
        deployed = protocol.deploy("Lift", 0, "base", 0)
        assert [e["steps"] for e in deployed["episodes"]] == [5]
        trained = protocol.train_method("Lift", 0, "apo", 1)
        evaluated = protocol.evaluate("Lift", 0, "apo_r1")
    retrained = load_policy(trained["policy"])
    assert isinstance(retrained, ChunkedVLAPolicy) and retrained.chunk_horizon == 4
    assert retrained.version == "apo_r1"
    assert [r["seed"] for r in evaluated["episodes"]] == settings.eval_seeds()
    assert all(r["steps"] == 5 for r in evaluated["episodes"])
