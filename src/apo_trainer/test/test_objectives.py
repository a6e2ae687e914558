"""Loss families as objects: the registry is the one list of loss names, each objective's data and
reference needs, and an objective's loss equals the loss function's on the same tensors."""

import typing
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from apo_core.errors import ConfigError
from apo_trainer.config import LossSection, TrainConfig, load_train_config
from apo_trainer.losses import LOCAL, apo_loss, bc_loss, kto_loss
from apo_trainer.objectives import (
    LOSS_NAMES,
    OBJECTIVES,
    KTOObjective,
    LikelihoodObjective,
    PairObjective,
    PreferenceObjective,
    make_objective,
    objective_class,
)
from apo_trainer.retrain.requests import LOSSES, RetrainRequestError, check_loss
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.train import _parser


def test_registry_covers_every_loss_name_the_config_and_the_retrain_service_accept():
    assert LOSS_NAMES == tuple(OBJECTIVES) == ("apo", "kto", "dpo", "bc")
    config_names = typing.get_args(typing.get_type_hints(LossSection)["name"])
    assert set(config_names) == set(LOSS_NAMES)
    assert tuple(LOSSES) == LOSS_NAMES
    for name in LOSS_NAMES:
        assert check_loss(name) == name
        assert load_retrain_settings({"defaults": {"loss": name}}).defaults.loss == name
    with pytest.raises(RetrainRequestError, match="ppo"):
        check_loss("ppo")
    with pytest.raises(ConfigError, match="defaults.loss"):
        load_retrain_settings({"defaults": {"loss": "ppo"}})
    choices = next(a.choices for a in _parser("apo-train", "")._actions if a.dest == "loss")
    assert tuple(choices) == LOSS_NAMES


def test_each_objective_knows_its_data_and_reference():
    assert OBJECTIVES["apo"] is PreferenceObjective and OBJECTIVES["kto"] is KTOObjective
    assert OBJECTIVES["dpo"] is PairObjective and OBJECTIVES["bc"] is LikelihoodObjective
    kinds = {name: cls.default_kinds for name, cls in OBJECTIVES.items()}
    assert kinds["apo"] == kinds["kto"] == ("expert", "autonomous", "human", "undesirable")
    assert kinds["dpo"] == ("expert", "autonomous", "human")
    assert kinds["bc"] == ("expert", "human")
    refs = {name: cls.reference_keys for name, cls in OBJECTIVES.items()}
    assert refs == {"apo": ("chosen",), "kto": ("chosen",), "dpo": ("chosen", "rejected"), "bc": ()}
    assert {n for n, c in OBJECTIVES.items() if c.batch_statistics_supported} == {"apo", "kto"}
    assert {n for n, c in OBJECTIVES.items() if c.augments_images} == {"bc"}
    assert {n for n, c in OBJECTIVES.items() if c.default_sampler == "uniform"} == {"bc"}
    free = {"l1_mode": "free_running"}
    assert make_objective(TrainConfig(loss=LossSection(name="apo", **free))).reports_free_running_l1
    assert not make_objective(TrainConfig(loss=LossSection(name="kto", **free))).reports_free_running_l1


def test_an_unknown_loss_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown loss 'ppo'; valid: apo, kto, dpo, bc"):
        objective_class("ppo")
    cfg = TrainConfig(output_dir=str(tmp_path), loss=LossSection(name="ppo"))  # built without validation
    with pytest.raises(ConfigError, match="apo, kto, dpo, bc"):
        make_objective(cfg)
    with pytest.raises(ConfigError, match="loss.name"):
        load_train_config({"output_dir": str(tmp_path), "data": {"paths": ["x.hdf5"]}, "loss": {"name": "ppo"}})


def _stub_trainer(logps, l1, ref, action_dim=7):
    """What an objective uses of the trainer, with a forward pass returning fixed tensors."""
    out = SimpleNamespace(logps=logps, l1=l1, token_accuracy=torch.zeros_like(l1))
    return SimpleNamespace(
        _forward=lambda batch, actions, model: out, model=None, ddp_model=None, ref={"chosen": ref},
        rt=SimpleNamespace(device=torch.device("cpu"), rank=0), loss_reducer=LOCAL,
        policy=SimpleNamespace(action_dim=action_dim), dataset=SimpleNamespace(state_dim=0), step=0)


def test_objective_loss_equals_the_loss_function_on_the_same_tensors():
    g = torch.Generator().manual_seed(0)
    n = 6
    logps = -5.0 - torch.rand(n, generator=g, dtype=torch.float64)
    ref = logps + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    l1 = torch.rand(n, generator=g)
    desirable = torch.tensor([True, True, False, True, False, True])
    batch = {"actions": np.zeros((n, 7)), "index": torch.arange(n), "desirable": desirable}
    tr = _stub_trainer(logps, l1, ref)

    loss = {"name": "apo", "weight_norm": "mean", "sft_weight": 0.5, "beta": 0.3}
    res, extra = make_objective(TrainConfig(loss=LossSection(**loss))).compute(tr, batch)
    want = apo_loss(logps, ref, l1, desirable, beta=0.3, weight_norm="mean", sft_weight=0.5, n_tokens=7)
    assert res.value == want.value and res.metrics == want.metrics
    assert torch.equal(res.per_sample, want.per_sample) and torch.equal(extra["l1"], l1)

    loss = {"name": "kto", "desirable_weight": 1.5, "undesirable_weight": 0.5}
    res, _ = make_objective(TrainConfig(loss=LossSection(**loss))).compute(tr, batch)
    want = kto_loss(logps, ref, desirable, beta=0.1, desirable_weight=1.5, undesirable_weight=0.5)
    assert res.value == want.value and res.metrics == want.metrics

    res, _ = make_objective(TrainConfig(loss=LossSection(name="bc"))).compute(tr, batch)
    want = bc_loss(logps, 7)
    assert res.value == want.value and torch.equal(res.per_sample, want.per_sample)
