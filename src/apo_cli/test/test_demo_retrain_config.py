"""The demo's retraining config: the bench's per-loss choices, read from config/bench.yaml, given to the
retraining service as loss_overrides."""

import shutil

import pytest

from apo_bench.settings import load_bench_settings
from apo_cli.demo import demo_retrain_config
from apo_core.config import find_shared_config, merge_overrides, read_yaml
from apo_trainer.config import load_train_config
from apo_trainer.retrain.settings import load_retrain_settings

BENCH_METHOD = {"apo": "apo", "kto": "kto", "bc": "dagger", "dpo": "dpo"}


@pytest.mark.parametrize("loss", ["apo", "kto", "bc", "dpo"])
def test_each_loss_gets_the_bench_setting_and_a_config_it_can_train_with(tmp_path, loss):
    settings = load_retrain_settings(demo_retrain_config(tmp_path))
    bench = load_bench_settings("default").methods[BENCH_METHOD[loss]].overrides
    overrides = settings.overrides_for(loss)
    assert overrides["optim"]["lr"] == bench["optim"]["lr"]
    assert overrides.get("loss") == bench.get("loss") and overrides.get("data", {}).get("kinds") == \
        bench.get("data", {}).get("kinds")
    assert "max_steps" not in overrides["train"]  # the request's steps (the demo's retrain_steps) decide
    # What the retraining job builds from it loads as a training config (bc / dpo refuse undesirable kinds).
    job = {"output_dir": str(tmp_path / "o"), "policy": {"path": "p"}, "data": {"paths": ["d.h5"], "k": 10},
           "loss": {"name": loss}, "train": {"max_steps": 5}}
    cfg = load_train_config(None, overrides=merge_overrides(job, overrides))
    assert cfg.data.kinds == bench.get("data", {}).get("kinds")


def test_the_demo_follows_a_changed_bench_config(tmp_path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(find_shared_config("bench.yaml").parent, config)
    bench = read_yaml(config / "bench.yaml")
    bench["defaults"]["methods"]["apo"]["overrides"]["optim"]["lr"] = 1.25e-4
    import yaml

    (config / "bench.yaml").write_text(yaml.safe_dump(bench))
    monkeypatch.setenv("APO_CONFIG_DIR", str(config))
    settings = load_retrain_settings(demo_retrain_config(tmp_path))
    assert settings.overrides_for("apo")["optim"]["lr"] == 1.25e-4
    assert settings.overrides_for("bc")["optim"]["lr"] == bench["defaults"]["methods"]["dagger"]["overrides"]["optim"]["lr"]
