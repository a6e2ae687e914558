"""`apo models import | list | set-current` on real directories (ROS-free): what is accepted, what the
store holds afterwards, and a clear error (exit 2, nothing left in the store) for what is not."""

import json

import numpy as np
import pytest

from apo_cli.cli import main as apo_main
from apo_cli.models_cli import default_store_path
from apo_core.model_import import find_import_source
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_core.policy.openvla import load_openvla_stats
from apo_trainer.testing import tiny_policy


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return tiny_policy(seed=2).save(tmp_path_factory.mktemp("pol") / "policy")


def _run_dir(tmp_path, policy_dir):
    """An apo-train output directory: policy/ + checkpoints/ + metrics.jsonl."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(policy_dir, run / "policy")
    (run / "checkpoints").mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    return run


def _hf_checkpoint(root, stats: dict | None = None, model_type="llava", weights=True, auto_map=None):
    """A Hugging Face checkpoint's files as OpenVLA ships them (weights are not read without --full-check)."""
    root.mkdir(parents=True)
    config = {"model_type": model_type, **({"auto_map": auto_map} if auto_map else {})}
    (root / "config.json").write_text(json.dumps(config))
    if weights:
        (root / "model.safetensors").write_bytes(b"\x00" * 16)
    if stats is not None:
        (root / "dataset_statistics.json").write_text(json.dumps(stats))
    (root / ".git").mkdir()
    (root / ".git" / "big-object").write_bytes(b"\x00" * 64)
    return root


def _stats(lo):
    return {"action": {"q01": [lo] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}


def test_default_store_is_the_deploy_graphs_model_path():
    assert str(default_store_path()) == "runs/models"


def test_import_run_and_policy_dir_then_list_and_set_current(tmp_path, policy_dir, capsys):
    store_root = tmp_path / "models"
    run = _run_dir(tmp_path, policy_dir)
    assert apo_main(["models", "import", str(run), "--store", str(store_root)]) == 0
    store = ModelStore(store_root)
    # the first import becomes current (the store had none), copied from the run's policy/
    assert store.versions() == ["v0001"] and store.current_version() == "v0001"
    assert load_policy(store.path("v0001")).version == "v0001"
    assert apo_main(["models", "import", str(policy_dir), "--store", str(store_root), "--version", "v0005"]) == 0
    assert store.versions() == ["v0001", "v0005"] and store.current_version() == "v0001"
    out = capsys.readouterr().out
    assert "as v0005" in out and "apo models set-current v0005" in out

    assert apo_main(["models", "list", "--store", str(store_root)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().startswith("v0")}
    assert "*" in lines["v0001"] and "*" not in lines["v0005"]
    assert f"{run.resolve()} (apo-train run)" in lines["v0001"]
    assert f"{policy_dir.resolve()} (policy directory)" in lines["v0005"]
    assert store.version_records()[0]["note"]["policy_dir"] == str((run / "policy").resolve())

    assert apo_main(["models", "set-current", "v0005", "--store", str(store_root)]) == 0
    assert store.current_version() == "v0005"
    assert "v0005 (was v0001)" in capsys.readouterr().out
    assert apo_main(["models", "import", str(policy_dir), "--store", str(store_root), "--set-current"]) == 0
    assert store.current_version() == "v0006"


@pytest.mark.parametrize("argv, words", [
    (["set-current", "v0009"], ["v0009", "not found"]),
    (["set-current", "../x"], ["model version", "'../x'"]),
    (["import", "{policy}", "--version", "v0001"], ["v0001 already exists", "next free: v0002"]),
    (["import", "{policy}", "--version", "latest"], ["'latest'", "expected form"]),
])
def test_bad_store_requests_exit_2(tmp_path, policy_dir, capsys, argv, words):
    store_root = tmp_path / "models"
    ModelStore(store_root).add(policy_dir)
    argv = [a.format(policy=policy_dir) for a in argv]
    assert apo_main(["models", *argv, "--store", str(store_root)]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert ModelStore(store_root).versions() == ["v0001"]


def test_list_and_set_current_without_a_store(tmp_path, capsys):
    for argv in (["list"], ["set-current", "v0001"]):
        assert apo_main(["models", *argv, "--store", str(tmp_path / "none")]) == 2
        assert f"no model store at {tmp_path / 'none'}" in capsys.readouterr().err


def test_unimportable_directories_are_refused_with_what_is_missing(tmp_path, policy_dir, capsys):
    import shutil

    store_root = tmp_path / "models"
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    shutil.copytree(policy_dir, tmp_path / "no_tokenizer")
    (tmp_path / "no_tokenizer" / "tokenizer.json").unlink()
    shutil.copytree(policy_dir, tmp_path / "garbled")
    (tmp_path / "garbled" / "model.safetensors").write_bytes(b"\x00" * 64)
    ModelStore(tmp_path / "a_store").add(policy_dir)
    cases = {
        "nowhere": ["nowhere", "does not exist"],
        "afile": ["is a file"],
        "empty": ["holds no policy", "policy/apo_policy.json", "config.json"],
        "unfinished": ["training run without a finished policy"],
        "no_tokenizer": ["incomplete", "tokenizer.json"],
        "garbled": ["garbled", "does not load"],
        "a_store": ["is a model store itself"],
    }
    for name, words in cases.items():
        assert apo_main(["models", "import", str(tmp_path / name), "--store", str(store_root)]) == 2, name
        err = capsys.readouterr().err
        assert all(w in err for w in words), (name, err)
        assert "Traceback" not in err
    # nothing half-copied stays behind
    assert ModelStore(store_root).versions() == []
    assert not store_root.exists() or not any(p.name.startswith(".tmp") for p in (store_root / "versions").iterdir())
    # a --store that is some other non-empty directory is refused
    assert apo_main(["models", "import", str(policy_dir), "--store", str(tmp_path / "no_tokenizer")]) == 2
    assert "not a model store" in capsys.readouterr().err


def test_hugging_face_checkpoint_with_openvla_statistics(tmp_path, capsys):
    store_root = tmp_path / "models"
    ckpt = _hf_checkpoint(tmp_path / "openvla-ft", stats={"bridge_orig": _stats(-1.0), "my_robot": _stats(-0.5)})
    assert apo_main(["models", "import", str(ckpt), "--store", str(store_root)]) == 2
    assert "--unnorm-key" in capsys.readouterr().err and ModelStore(store_root).versions() == []
    assert apo_main(["models", "import", str(ckpt), "--store", str(store_root), "--unnorm-key", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err

    assert apo_main(["models", "import", str(ckpt), "--store", str(store_root), "--unnorm-key", "my_robot"]) == 0
    store = ModelStore(store_root)
    version_dir = store.path("v0001")
    meta = json.loads((version_dir / "apo_policy.json").read_text())
    assert meta == {"kind": "openvla", "action_dim": 7, "version": "v0001"}
    # the chosen statistics are fixed in the copy: what the policy node will unnormalise with
    assert np.allclose(load_openvla_stats(version_dir).q01, -0.5)
    assert not (version_dir / ".git").exists()
    assert store.version_records()[0]["note"]["unnorm_key"] == "my_robot"


def test_hugging_face_checkpoint_problems(tmp_path):
    from apo_core.errors import ApoError

    one = {"d": _stats(-1.0)}
    no_weights = _hf_checkpoint(tmp_path / "no_weights", stats=one, weights=False)
    no_stats = _hf_checkpoint(tmp_path / "no_stats")
    sharded = _hf_checkpoint(tmp_path / "sharded", stats=one, weights=False)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"\x00")
    no_type = _hf_checkpoint(tmp_path / "no_type", stats=one, model_type="")
    for path, words in [(no_weights, ["no weights", "model.safetensors"]),
                        (no_stats, ["no action statistics", "dataset_statistics.json"]),
                        (sharded, ["incomplete", "model-00002-of-00002.safetensors"]),
                        (no_type, ["no model_type"])]:
        with pytest.raises(ApoError) as err:
            find_import_source(path)
        assert all(w in str(err.value) for w in words), str(err.value)
    # a checkpoint that ships its own code is importable, with a warning about trust_remote_code
    remote = _hf_checkpoint(tmp_path / "remote", stats=one, model_type="openvla",
                            auto_map={"AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"})
    source = find_import_source(remote)
    assert source.kind == "openvla" and any("trust_remote_code" in w for w in source.warnings)
    # our own statistics file is used as it is
    ours = _hf_checkpoint(tmp_path / "ours")
    ActionStats.identity(7).save(ours / "action_stats.json")
    assert find_import_source(ours).stats_text is None
