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


def test_the_demo_renders_the_bench_camera_in_demos_graph_and_evaluation(tmp_path, monkeypatch):
    from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
    from apo_cli.cli import build_parser
    from apo_cli.demo import DemoSettings, deploy_graph_args, settings_from_args

    camera = load_bench_settings("default").camera
    assert camera == "robot0_eye_in_hand" and DemoSettings().camera == camera
    args = deploy_graph_args(DemoSettings(), tmp_path, tmp_path / "expert.h5")
    sim = next(s for s in resolve_graph(load_graph_file(default_graph_path()), args) if s.name == "apo_sim")
    assert sim.parameters["camera"] == camera
    # The deploy graph's own default stays the scene camera; `apo demo --camera` overrides the bench's.
    plain = resolve_graph(load_graph_file(default_graph_path()), {})
    assert next(s for s in plain if s.name == "apo_sim").parameters["camera"] == "agentview"
    chosen = settings_from_args(build_parser().parse_args(["demo", "--quick", "--camera", "agentview"]))
    assert chosen.camera == "agentview"
    # A changed bench config changes the demo's camera too.
    config = tmp_path / "config"
    shutil.copytree(find_shared_config("bench.yaml").parent, config)
    bench = read_yaml(config / "bench.yaml")
    bench["defaults"]["camera"] = "frontview"
    import yaml

    (config / "bench.yaml").write_text(yaml.safe_dump(bench))
    monkeypatch.setenv("APO_CONFIG_DIR", str(config))
    assert DemoSettings().camera == "frontview"


@pytest.mark.parametrize("architecture", ["small_vla", "chunked_vla"])
def test_each_architecture_gets_the_bench_setting_for_it(tmp_path, architecture):
    bench = load_bench_settings("default", overrides={"policy_architecture": architecture})
    settings = load_retrain_settings(demo_retrain_config(tmp_path, architecture))
    for loss, method in BENCH_METHOD.items():
        assert settings.overrides_for(loss)["optim"]["lr"] == bench.retrain_overrides(method)["optim"]["lr"]
    # The bench retrains the chunked VLA at a lower rate than the small VLA (config/bench.yaml).
    small = load_bench_settings("default").retrain_overrides("apo")["optim"]["lr"]
    assert (settings.overrides_for("apo")["optim"]["lr"] < small) == (architecture == "chunked_vla")


def test_the_demo_graph_carries_its_architectures_retraining_settings(tmp_path):
    from apo_cli.demo import DemoSettings, deploy_graph_args

    args = deploy_graph_args(DemoSettings(policy_architecture="chunked_vla"), tmp_path, tmp_path / "expert.h5")
    chunked = load_bench_settings("default", overrides={"policy_architecture": "chunked_vla"})
    settings = load_retrain_settings(args["retrain_config"])
    assert settings.overrides_for("apo")["optim"]["lr"] == chunked.retrain_overrides("apo")["optim"]["lr"]
