"""The demo's retraining config: the bench's choices, given to the retraining service per loss."""

import pytest

from apo_cli.demo import demo_retrain_config
from apo_core.config import merge_overrides
from apo_trainer.config import load_train_config
from apo_trainer.retrain.settings import load_retrain_settings


@pytest.mark.parametrize("loss, kinds", [("apo", ["expert", "human", "undesirable"]),
                                         ("kto", ["expert", "human", "undesirable"]), ("bc", None), ("dpo", None)])
def test_each_loss_gets_a_config_it_can_train_with(tmp_path, loss, kinds):
    settings = load_retrain_settings(demo_retrain_config(tmp_path, loss))
    overrides = settings.train_overrides
    assert overrides["optim"]["lr"] == 3e-4 and overrides["loss"]["sft_weight"] == 1.0
    assert overrides.get("data", {}).get("kinds") == kinds
    # What the retraining job builds from it loads as a training config (bc / dpo refuse undesirable kinds).
    job = {"output_dir": str(tmp_path / "o"), "policy": {"path": "p"}, "data": {"paths": ["d.h5"], "k": 10},
           "loss": {"name": loss}}
    cfg = load_train_config(None, overrides=merge_overrides(job, overrides))
    assert cfg.data.kinds == kinds
