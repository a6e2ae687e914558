"""Gradient accumulation optimises the whole batch's loss; free-running L1; batch sizes the split cannot honour."""

import json

import numpy as np
import pytest
import torch

from apo_core.errors import ConfigError
from apo_core.policy.base import Observation
from apo_trainer.config import load_train_config
from apo_trainer.data import StepDataset, collate_steps
from apo_trainer.testing import (
    tiny_policy,
    tiny_train_config,
    tiny_training_data,
)
from apo_trainer.train import Trainer, free_running_l1, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tiny_training_data(tmp_path_factory.mktemp("accum"), n_expert=2, n_interactive=3)
    return data


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss", [
    {"name": "apo"},
    {"name": "apo", "weight_norm": "reference"},
    {"name": "apo", "weight_norm": "mean", "l1_mode": "free_running"},
    {"name": "kto"},
], ids=["apo-paper", "apo-reference", "apo-mean-free-running", "kto"])
def test_accumulating_two_batches_of_8_equals_one_batch_of_16(data, tmp_path, loss):
    cfg = load_train_config(tiny_train_config(tmp_path / "o", [data.expert, data.inter], policy_path=data.start,
                                              loss={**loss, "z0_min": None, "beta": 1.0},
                                              train={"grad_accum_steps": 2}))
    tr = Trainer(cfg)
    try:
        tr.setup()
        # move the policy well away from the reference so that z0 differs between micro-batches and
        # beta (r - z0) leaves the flat middle of the sigmoid: otherwise KTO's gradient hardly depends
        # on z0 and per-micro-batch statistics (the old behaviour) would pass this test too
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in tr.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g))
        tr.sampler.set_epoch(0)
        first, second = list(tr.sampler)[:2]
        ds = tr.dataset
        b1, b2 = collate_steps([ds[i] for i in first]), collate_steps([ds[i] for i in second])
        b16 = collate_steps([ds[i] for i in first + second])

        tr.optimizer.zero_grad(set_to_none=True)
        acc = tr.accumulate_gradients([b1, b2])
        g_acc = _grads(tr.model)
        tr.optimizer.zero_grad(set_to_none=True)
        one = tr.accumulate_gradients([b16])
        g_one = _grads(tr.model)
        tr.optimizer.zero_grad(set_to_none=True)
        alone, _ = tr.compute_loss(b1)  # what each micro-batch computed on its own before
    finally:
        tr.close()
    assert abs(one["z0"]) > 1e-3
    for key in ("loss", "z0", "reward_desirable", "reward_undesirable", "lambda_D", "lambda_U", "n_desirable",
                "n_undesirable", "action_l1"):
        assert acc[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    assert one["n_desirable"] + one["n_undesirable"] == 16
    if loss.get("l1_mode") == "free_running":
        assert acc["action_l1_free_running"] == pytest.approx(one["action_l1_free_running"], rel=1e-6)
    norm = sum(float(v.norm() ** 2) for v in g_one.values()) ** 0.5
    assert norm > 0
    for name in g_one:
        assert torch.allclose(g_acc[name], g_one[name], rtol=1e-4, atol=1e-6 * norm), name
    # the test has teeth: a micro-batch on its own has another reference point or other weights
    differs = abs(alone.metrics["z0"] - one["z0"]) > 1e-2
    if loss["name"] == "apo" and loss.get("weight_norm", "paper") != "mean":
        differs = differs or abs(alone.metrics["lambda_U"] - one["lambda_U"]) > 1e-4
    assert differs


def test_free_running_l1_is_the_l1_of_predict_against_the_target(data):
    policy = tiny_policy(data.stats, seed=3)
    ds = StepDataset(data.inter)
    batch = collate_steps([ds[i] for i in range(0, len(ds), 9)])
    l1 = free_running_l1(policy, batch["images"], batch["instructions"], batch["actions"])
    assert l1.shape == (len(batch["actions"]),) and not l1.requires_grad
    target = policy.action_tokenizer.decode(policy.labels_from_actions(batch["actions"]))
    for i in range(len(l1)):
        pred = policy.action_stats.normalise(policy.predict(Observation(batch["images"][i], batch["instructions"][i])))
        assert float(l1[i]) == pytest.approx(float(np.abs(pred - target[i]).mean()), abs=1e-6)
    # a randomly initialised policy decodes differently with and without teacher forcing
    enc = policy.encode_batch(batch["images"], batch["instructions"], None, batch["actions"])
    with torch.no_grad():
        teacher = policy.forward_batch(enc).l1
    assert not torch.allclose(teacher.float(), l1, atol=1e-3)


def test_a_round_with_the_mean_normalisation_and_free_running_l1(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "o", [data.inter], policy_path=data.start, max_steps=2,
                            loss={"name": "apo", "weight_norm": "mean", "l1_mode": "free_running"},
                            train={"tensorboard": False})
    res = train(cfg)
    final = json.loads(res.metrics_path.read_text())["final"]
    assert np.isfinite(final["action_l1_free_running"]) and 0.1 <= final["lambda_D"] <= 1.0


def test_batch_sizes_the_split_cannot_honour_are_refused():
    base = {"output_dir": "x", "data": {"paths": ["a"]}, "policy": {"path": "p"}}
    with pytest.raises(ConfigError, match=r"train.batch_size=6 .*human 1\.5.*multiple of 4"):
        load_train_config({**base, "train": {"batch_size": 6}})
    with pytest.raises(ConfigError, match=r"batch_size=8 .*multiple of 3"):
        load_train_config({**base, "sampler": {"shares": {"desirable": 1, "human": 1, "undesirable": 1}}})
    load_train_config({**base, "train": {"batch_size": 12, "grad_accum_steps": 3}})
    load_train_config({**base, "train": {"batch_size": 6}, "loss": {"name": "bc"}, "lora": {"enabled": False}})
    with pytest.raises(ConfigError, match="loss.lambda_d_floor"):
        load_train_config({**base, "loss": {"lambda_d_floor": 1.0}})
    with pytest.raises(ConfigError, match="loss.weight_norm"):
        load_train_config({**base, "loss": {"weight_norm": "median"}})
