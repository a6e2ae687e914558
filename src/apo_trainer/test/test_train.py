"""Training end to end on tiny models: one APO step's effect, BC learning, every loss, bad input, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from apo_core.dataset import MODE_HOLD, append_episode
from apo_core.errors import ConfigError
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_trainer.config import BC_PRESET, TrainConfig, load_train_config
from apo_trainer.data import AUTONOMOUS, UNDESIRABLE, StepDataset, TrainingDataError, collate_steps
from apo_trainer.testing import (
    synthetic_episode,
    tiny_policy,
    tiny_train_config,
    tiny_training_data,
    write_expert_dataset,
)
from apo_trainer.train import Trainer, main, main_bc, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tiny_training_data(tmp_path_factory.mktemp("train"), n_expert=4, n_interactive=3)
    return data


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.loss.name == "apo" and cfg.loss.z0_min == 0.0 and cfg.loss.z0_source == "batch"
    assert cfg.loss.reduction == "mean"
    assert (cfg.lora.enabled, cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == (True, 32, 16, "all-linear")
    assert cfg.optim.lr == 5e-5 and cfg.train.batch_size == 8 and cfg.data.k == 10
    assert cfg.optim.schedule == "cosine" and cfg.optim.max_grad_norm > 0
    assert cfg.sampler.shares == {"desirable": 0.5, "human": 0.25, "undesirable": 0.25}
    assert cfg.reference.mode == "cached"


def _one_step(data, tmp_path, kinds_wanted):
    cfg = load_train_config(tiny_train_config(tmp_path, data.inter, policy_path=data.start,
                                              optim={"lr": 1e-3, "warmup_ratio": 0.0}))
    tr = Trainer(cfg)
    try:
        tr.setup()
        ds = tr.dataset
        rows = [int(np.flatnonzero(ds.kinds == k)[0]) for k in kinds_wanted]
        batch = collate_steps([ds[i] for i in rows])
        with torch.no_grad():
            before = tr._forward(batch, batch["actions"], tr.model).logps.double()
        ref = tr.ref["chosen"][batch["index"]]
        assert torch.allclose(before, ref, atol=1e-4)  # the adapter starts at zero: policy == reference
        metrics = tr.train_step([batch])
        with torch.no_grad():
            after = tr._forward(batch, batch["actions"], tr.model).logps.double()
    finally:
        tr.close()
    for key in ("loss", "z0", "action_l1", "token_accuracy"):
        assert np.isfinite(metrics[key]), key
    return before, after, ref


def test_one_apo_step_raises_desirable_and_lowers_undesirable(data, tmp_path):
    before, after, _ = _one_step(data, tmp_path / "d", [AUTONOMOUS])
    assert after[0] > before[0], "the desirable action's log-prob should rise"
    before, after, _ = _one_step(data, tmp_path / "u", [UNDESIRABLE])
    assert after[0] < before[0], "the undesirable action's log-prob should fall"
    # Both in one batch: the implicit reward of the desirable sample moves above the undesirable one's.
    before, after, ref = _one_step(data, tmp_path / "both", [AUTONOMOUS, UNDESIRABLE])
    r = after - ref
    assert r[0] > r[1]


def _dataset_l1(policy, path) -> float:
    ds = StepDataset(path)
    batch = collate_steps([ds[i] for i in range(len(ds))])
    enc = policy.encode_batch(batch["images"], batch["instructions"], None, batch["actions"])
    with torch.no_grad():
        return float(policy.forward_batch(enc).l1.mean())


def test_bc_from_scratch_drives_action_l1_down(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "bc", data.expert, loss="bc", max_steps=150, batch_size=16,
                            train={"log_every": 50})
    res = train(cfg, preset=BC_PRESET)
    start = tiny_policy(data.stats)  # same seed and sizes as the run's initial policy
    trained = load_policy(res.policy_dir)
    l1_before, l1_after = _dataset_l1(start, data.expert), _dataset_l1(trained, data.expert)
    assert l1_after < 0.5 * l1_before, (l1_before, l1_after, res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert json.loads((res.policy_dir / "action_stats.json").read_text()) == data.stats.to_dict()
    summary = json.loads(res.metrics_path.read_text())
    assert summary["steps"] == 150 and summary["dataset"]["kinds"]["expert"] == 48


@pytest.mark.parametrize("variant", [
    {"loss": {"name": "apo"}},
    {"loss": {"name": "kto"}},
    {"loss": {"name": "dpo"}},
    {"loss": {"name": "apo", "z0_source": "mismatched", "z0_min": -5.0, "z0_max": 5.0, "reduction": "sum"},
     "reference": {"mode": "online"}},
    {"loss": {"name": "bc"}, "data": {"kinds": ["expert", "human"]}},
    {"loss": {"name": "apo"}, "data": {"num_workers": 1}, "train": {"precision": "bf16", "grad_accum_steps": 2}},
    {"loss": {"name": "bc"}, "data": {"kinds": ["expert", "human"], "image_shift": 3}},
    {"loss": {"name": "apo", "sft_weight": 0.5, "weight_norm": "mean"}},
], ids=["apo", "kto", "dpo", "apo-reference-code", "dagger", "apo-bf16-workers-accum", "dagger-shifted-images",
        "apo-sft-anchor"])
def test_every_loss_runs_a_round_and_writes_a_policy(data, tmp_path, variant):
    cfg = tiny_train_config(tmp_path / "o", [data.inter], policy_path=data.start, max_steps=3, **variant)
    res = train(cfg)
    policy = load_policy(res.policy_dir)
    img = np.zeros((32, 32, 3), np.uint8)
    assert policy.predict_batch(img[None], ["push the square to the goal"]).shape == (1, 7)
    weights = load_file(str(res.policy_dir / "model.safetensors"))
    assert not any("lora" in k for k in weights), "the LoRA adapter must be merged into the saved policy"
    summary = json.loads(res.metrics_path.read_text())
    assert [h["step"] for h in summary["history"]] == [1, 2, 3]
    final = summary["final"]
    assert np.isfinite(final["loss"]) and np.isfinite(final["action_l1"])
    name = variant["loss"]["name"]
    if name in ("apo", "kto"):
        assert {"z0", "lambda_D", "lambda_U", "reward_desirable", "reward_undesirable"} <= set(final)
    if variant["loss"].get("sft_weight"):
        assert final["sft_nll"] > 0
    if name == "dpo":
        assert {"reward_chosen", "reward_rejected", "reward_accuracy"} <= set(final)
    assert list((res.output_dir / "tensorboard").glob("events.*"))
    assert (res.output_dir / "checkpoints" / "latest").is_file()


def test_apo_round_with_the_policys_own_steps_in_a_share_of_their_own(data, tmp_path):
    shares = {"expert": 0.375, "autonomous": 0.125, "human": 0.25, "undesirable": 0.25}
    cfg = tiny_train_config(tmp_path / "o", [data.expert, data.inter], policy_path=data.start, max_steps=3,
                            sampler={"shares": shares})
    res = train(cfg)
    sampler = json.loads(res.metrics_path.read_text())["sampler"]
    assert sampler["per_batch"] == {"expert": 3, "autonomous": 1, "human": 2, "undesirable": 2}
    assert sampler["notes"] == []
    assert load_policy(res.policy_dir) is not None


def test_lora_changes_the_policy_and_reference_cache_is_written(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start, max_steps=3,
                            optim={"lr": 1e-3})
    res = train(cfg)
    cache = load_file(str(res.output_dir / "reference_logps.safetensors"))
    assert cache["chosen"].shape == (len(StepDataset(data.inter)),) and torch.all(cache["chosen"] < 0)
    before = load_file(str(Path(data.start) / "model.safetensors"))
    after = load_file(str(res.policy_dir / "model.safetensors"))
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_missing_human_and_undesirable_data_is_reported(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "o", data.expert, policy_path=data.start, max_steps=2)
    res = train(cfg)
    notes = json.loads(res.metrics_path.read_text())["sampler"]["notes"]
    assert any("no human corrections" in n and "redistributed" in n for n in notes)
    assert any("no undesirable steps" in n for n in notes)


@pytest.mark.parametrize("loss", ["bc", "dpo"])
def test_losses_that_raise_every_step_refuse_undesirable_steps(loss):
    cfg = {"output_dir": "x", "policy": {"path": "p"}, "loss": {"name": loss},
           "data": {"paths": ["a"], "kinds": ["expert", "human", "undesirable"]}}
    with pytest.raises(ConfigError, match=f"loss '{loss}' raises the likelihood of every step.*undesirable"):
        load_train_config(cfg)
    cfg["loss"]["name"] = "apo"  # apo pushes them down: the same kinds are its to use
    assert load_train_config(cfg).data.kinds == ["expert", "human", "undesirable"]


def test_bad_inputs_give_clear_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*did you mean 'train'"):
        load_train_config({"output_dir": "x", "data": {"paths": ["a"]}, "policy": {"path": "p"}, "trian": {}})
    with pytest.raises(ConfigError, match="unknown config key 'loss.bta'.*did you mean 'beta'"):
        load_train_config({"output_dir": "x", "data": {"paths": ["a"]}, "policy": {"path": "p"},
                           "loss": {"bta": 1}})
    with pytest.raises(ConfigError, match="policy.path is required for loss 'apo'"):
        load_train_config({"output_dir": "x", "data": {"paths": ["a"]}})
    with pytest.raises(ConfigError, match="must be fully fine-tuned"):
        load_train_config({"output_dir": "x", "data": {"paths": ["a"]}, "loss": {"name": "bc"}})
    with pytest.raises(ConfigError, match="data.paths is empty"):
        load_train_config({"output_dir": "x", "policy": {"path": "p"}})
    # a policy with 6-D actions on 7-D data
    six = tiny_policy(action_dim=6).save(tmp_path / "six")
    with pytest.raises(TrainingDataError, match="7-D actions, the policy expects 6-D"):
        train(tiny_train_config(tmp_path / "o1", data.inter, policy_path=six))
    # zero-range statistics next to expert data
    zr = write_expert_dataset(tmp_path / "zr" / "demos.hdf5", n_episodes=1, length=4, image_size=32)
    ActionStats(q01=[0.0] * 7, q99=[0.0] + [1.0] * 6, mask=[True] * 6 + [False]).save(zr.parent / "action_stats.json")
    with pytest.raises(TrainingDataError, match=r"zero range .*\[0\]"):
        train(tiny_train_config(tmp_path / "o2", zr, loss="bc"), preset=BC_PRESET)
    # nothing left after HOLD/E-STOP filtering
    held = tmp_path / "held" / "held.hdf5"
    append_episode(held, synthetic_episode("h", 5, np.random.default_rng(0), image_size=32,
                                           modes=np.full(5, MODE_HOLD)))
    with pytest.raises(TrainingDataError, match="no training steps"):
        train(tiny_train_config(tmp_path / "o3", held, policy_path=data.start))


def test_cli_print_config_and_errors(data, tmp_path, capsys):
    assert main(["--print-config", "--output", str(tmp_path), "--dataset", str(data.inter),
                 "--policy", str(data.start)]) == 0
    out = capsys.readouterr().out
    assert "lr: 5.0e-05" in out and "name: apo" in out
    assert main_bc(["--print-config", "--output", str(tmp_path), "--dataset", str(data.expert)]) == 0
    out = capsys.readouterr().out
    assert "name: bc" in out and "enabled: false" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nloss:\n  nmae: apo\n")
    assert main(["--config", str(bad)]) == 2
    assert "unknown config key 'loss.nmae'" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "o"), "--dataset", str(tmp_path / "missing.hdf5"),
                 "--policy", str(data.start)]) == 2
    assert "missing.hdf5" in capsys.readouterr().err


def test_training_modules_do_not_import_ros():
    import subprocess
    import sys

    code = ("import sys; import apo_trainer.train, apo_trainer.losses, apo_trainer.data, apo_trainer.sampler, "
            "apo_trainer.checkpoint, apo_trainer.pairs; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'apo_interfaces')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_image_shift_changes_what_bc_sees_and_nothing_else(data, tmp_path):
    losses = {}
    for shift in (0, 4):
        cfg = load_train_config(tiny_train_config(tmp_path / f"s{shift}", [data.expert], policy_path=data.start,
                                                  loss={"name": "bc"}, data={"image_shift": shift}))
        tr = Trainer(cfg)
        try:
            tr.setup()
            batch = collate_steps([tr.dataset[i] for i in range(8)])
            images = batch["images"].copy()
            with torch.no_grad():
                losses[shift] = [tr.compute_loss(batch)[0].value for _ in range(2)]
            assert np.array_equal(batch["images"], images)  # the dataset's batch is not modified in place
        finally:
            tr.close()
    assert losses[0][0] == losses[0][1]
    assert losses[4][0] == losses[4][1]  # the same step and samples draw the same shifts (resumable)
    assert losses[4][0] != losses[0][0]
