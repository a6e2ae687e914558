"""``policy_architecture``: the bench's base BC trains the chosen architecture, and every later cell
(deployment, a method's retraining, evaluation) runs that policy. Real simulator, tiny models, tiny budgets."""

import json

import pytest
import yaml

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
    # The chunked VLA's own retraining rate reaches its cell; the small VLA's entry is ignored.
    apo = {"loss": "apo", "overrides": {"optim": {"lr": 3e-4}, "train": {"max_steps": 2, "batch_size": 4}},
           "overrides_by_architecture": {"chunked_vla": {"optim": {"lr": 1e-4}}, "small_vla": {"optim": {"lr": 0.5}}}}
    settings = _settings(policy_architecture="chunked_vla", chunk_horizon=4, methods={"apo": apo})
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
    run_config = yaml.safe_load((protocol.policy_dir("Lift", 0, "apo_r1_run") / "config.yaml").read_text())
    assert run_config["optim"]["lr"] == 1e-4 and run_config["train"]["max_steps"] == 2
    retrained = load_policy(trained["policy"])
    assert isinstance(retrained, ChunkedVLAPolicy) and retrained.chunk_horizon == 4
    assert retrained.version == "apo_r1"
    assert [r["seed"] for r in evaluated["episodes"]] == settings.eval_seeds()
    assert all(r["steps"] == 5 for r in evaluated["episodes"])


def test_retraining_overrides_merge_common_then_method_then_the_runs_architecture():
    methods = {"apo": {"loss": "apo", "overrides": {"optim": {"lr": 3e-4}, "train": {"max_steps": 7}},
                       "overrides_by_architecture": {"chunked_vla": {"optim": {"lr": 1e-4}}}}}
    small = load_bench_settings("quick", overrides={"methods": methods, "common_overrides": {"data": {"k": 6}}})
    chunked = load_bench_settings("quick", overrides={"methods": methods, "policy_architecture": "chunked_vla"})
    assert small.retrain_overrides("apo")["optim"]["lr"] == 3e-4
    assert small.retrain_overrides("apo")["data"]["k"] == 6
    assert chunked.retrain_overrides("apo")["optim"]["lr"] == 1e-4
    assert chunked.retrain_overrides("apo")["train"]["max_steps"] == 7


def test_the_refit_preset_changes_only_how_each_method_retrains():
    from apo_bench.run_settings import current_record

    default, refit = load_bench_settings("default"), load_bench_settings("refit")
    changed = {k for k, v in current_record(refit).items() if current_record(default).get(k) != v}
    assert changed and all(k.startswith("methods.") for k in changed), changed
    for method in default.methods:
        small = refit.retrain_overrides(method)
        assert small["lora"]["enabled"] is False and small["optim"]["lr"] == 1e-3
        assert (small["train"]["max_steps"], small["train"]["batch_size"]) == (600, 32)
        # The objective's own settings stay the default's (APO's weights and anchor, the kinds of steps).
        assert small.get("loss") == default.retrain_overrides(method).get("loss")
        assert small["data"] == default.retrain_overrides(method)["data"]
        assert refit.retrain_overrides(method, "chunked_vla")["optim"]["lr"] == 1e-4  # the chunked VLA's own rate


@pytest.mark.parametrize("apo, message", [
    ({"overrides_by_architecture": {"pi0": {}}}, r"methods.apo.overrides_by_architecture: unknown .*'pi0'"),
    # A misspelt key for the architecture this run does not train is still caught before anything runs.
    ({"overrides_by_architecture": {"chunked_vla": {"optim": {"lrr": 1e-4}}}},
     r"methods.apo \(chunked_vla\): unknown config key 'optim.lrr'.*did you mean 'lr'"),
    ({"overrides": {"loss": {"weight_norm": "bogus"}}}, r"methods.apo \(small_vla\): loss.weight_norm"),
])
def test_bad_retraining_overrides_are_refused_at_load(apo, message):
    with pytest.raises(ConfigError, match=message):
        load_bench_settings("quick", overrides={"methods": {"apo": {"loss": "apo", **apo}}})
