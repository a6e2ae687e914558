"""Two-process DDP (gloo, torchrun) against one process on the union batch; resume after SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from apo_core.normalization import ActionStats
from apo_trainer.testing import tiny_policy, tiny_train_config, write_interactive_dataset
from apo_trainer.train import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    inter = write_interactive_dataset(root / "inter" / "inter.hdf5", n_episodes=3, length=30, image_size=32)
    stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-1, 1, size=(100, 7)))
    start = tiny_policy(stats).save(root / "start")
    return SimpleNamespace(root=root, inter=inter, start=start)


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(cfg: dict, path) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _history(out) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())["history"]


def _weights(out) -> dict:
    return load_file(str(out / "policy" / "model.safetensors"))


def test_two_process_ddp_equals_one_process_on_the_union_batch(data, tmp_path):
    common = {"optim": {"lr": 1e-3, "warmup_ratio": 0.0}}
    single = tiny_train_config(tmp_path / "single", data.inter, policy_path=data.start, max_steps=3, batch_size=8,
                               train={"tensorboard": False, "checkpoint_every": 3}, **common)
    train(single)
    ddp = tiny_train_config(tmp_path / "ddp", data.inter, policy_path=data.start, max_steps=3, batch_size=4,
                            train={"tensorboard": False, "checkpoint_every": 3}, **common)
    cfg_path = _write(ddp, tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "apo_trainer.train", "--config", cfg_path]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert summary["world_size"] == 2
    h1, h2 = _history(tmp_path / "single"), _history(tmp_path / "ddp")
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 2, 3]
    for a, b in zip(h1, h2, strict=True):
        for key in ("loss", "z0", "lambda_D", "lambda_U", "reward_desirable", "reward_undesirable", "action_l1",
                    "token_accuracy", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)
    w1, w2 = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    start = load_file(str(data.start / "model.safetensors"))
    changed = [k for k in w1 if not torch.equal(w1[k], start[k])]
    assert changed, "training changed nothing"
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4), k


def _wait_for_checkpoint(out, proc, timeout=120.0) -> None:
    latest = out / "checkpoints" / "latest"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if latest.is_file():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended (code {proc.returncode}) before its first checkpoint:\n"
                                 f"{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_resume_after_kill_continues_with_the_same_state(data, tmp_path):
    kw = dict(policy_path=data.start, max_steps=8, optim={"lr": 1e-3})
    reference = tiny_train_config(tmp_path / "whole", data.inter, train={"checkpoint_every": 2}, **kw)
    train(reference)

    out = tmp_path / "killed"
    cfg = tiny_train_config(out, data.inter, train={"checkpoint_every": 2, "step_delay_s": 0.4}, **kw)
    cfg_path = _write(cfg, tmp_path / "killed.yaml")
    cmd = [sys.executable, "-m", "apo_trainer.train", "--config", cfg_path]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(out, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "policy").exists(), "the run finished before it could be killed"
    killed_at = int((out / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 2 <= killed_at < 8

    proc = subprocess.run(cmd + ["--set", "train.step_delay_s=0.0"], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["resumed_from_step"] == killed_at
    h_whole, h_resumed = _history(tmp_path / "whole"), summary["history"]
    assert [h["step"] for h in h_resumed] == list(range(1, 9))
    for a, b in zip(h_whole, h_resumed, strict=True):
        for key in ("loss", "z0", "lambda_D", "lambda_U", "action_l1", "lr", "epoch"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (key, a["step"], a[key], b[key])
    w1, w2 = _weights(tmp_path / "whole"), _weights(out)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6), k


def test_changed_config_refuses_to_resume(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start, max_steps=2,
                            train={"checkpoint_every": 1})
    train(cfg)
    from apo_trainer.checkpoint import CheckpointError

    cfg["loss"]["beta"] = 0.5
    cfg["train"]["max_steps"] = 3
    with pytest.raises(CheckpointError, match=r"config changed in \['loss.beta'\]"):
        train(cfg)
    cfg["loss"]["beta"] = 0.1
    res = train(cfg)  # max_steps may change: continues from step 2
    assert res.resumed_from_step == 2 and res.steps == 3
