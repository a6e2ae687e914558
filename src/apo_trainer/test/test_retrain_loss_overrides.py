"""Per-loss overrides of the retraining service: a loss's own settings reach its jobs and no other loss's, and a
config no job could train with is refused when the service starts, not hours later in a job."""

import numpy as np
import pytest
import yaml

from apo_core.errors import ConfigError
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.retrain.job import RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.testing import tiny_policy

A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}
PREFERENCE = {"data": {"kinds": ["expert", "human", "undesirable"]}, "loss": {"sft_weight": 1.0}}


def _manager(tmp_path, **settings):
    actions = np.stack([sample_action(i) for i in range(200)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    for i in range(2):
        write_sample_bag(tmp_path / "bags", SampleEpisode(f"ep{i:02d}", [A] * 12 + [H] * 6 + [A] * 6,
                                                          image_size=(16, 16), start_ns=(1_700_000_000 + 100 * i) * 10**9))
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
           "defaults": {"steps": 2}, "train_overrides": TRAIN, "eval": {"heldout_every": 0}, **settings}
    return store, RetrainManager(load_retrain_settings(cfg))


def _job_config(manager, job_id) -> dict:
    return yaml.safe_load((manager.jobs_dir / job_id / "train_config.yaml").read_text())


def test_a_loss_gets_its_own_overrides_and_another_loss_does_not(tmp_path):
    store, m = _manager(tmp_path, loss_overrides={"apo": PREFERENCE})
    ok, apo_job, reason = m.submit(RetrainRequest(loss="apo"))
    assert ok, reason
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    cfg = _job_config(m, apo_job)
    assert cfg["data"]["kinds"] == ["expert", "human", "undesirable"] and cfg["loss"]["sft_weight"] == 1.0
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["max_steps"] == 2  # train_overrides and the request
    # A bc (DAgger) job on the same service: bc refuses undesirable steps, and it gets none of apo's settings.
    write_sample_bag(tmp_path / "bags", SampleEpisode("ep10", [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                                      start_ns=1_700_005_000 * 10**9))
    ok, bc_job, reason = m.submit(RetrainRequest(loss="bc"))
    assert ok, reason
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    cfg = _job_config(m, bc_job)
    assert "kinds" not in cfg["data"] and "sft_weight" not in cfg.get("loss", {})
    assert cfg["loss"]["name"] == "bc" and cfg["train"]["batch_size"] == 4


BASE = {"work_dir": "w", "bags_dir": "b", "model_store": "m"}


@pytest.mark.parametrize("settings, message", [
    # a setting for some losses in train_overrides would fail every bc/dpo job: refused at start, with the way out
    ({"train_overrides": PREFERENCE}, "train_overrides: a job with loss dpo would not load"),
    ({"train_overrides": PREFERENCE}, "a setting for some losses only goes in loss_overrides.<loss>"),
    ({"loss_overrides": {"bc": PREFERENCE}}, "loss_overrides.bc: a job with loss bc would not load"),
    ({"loss_overrides": {"ppo": {}}}, "loss_overrides: unknown loss 'ppo'"),
    ({"loss_overrides": {"apo": 3}}, "loss_overrides.apo"),
    ({"train_overrides": {"optim": {"lrr": 1e-4}}}, "did you mean 'lr'"),
    ({"loss_overrides": {"kto": {"loss": {"nmae": "x"}}}}, "loss_overrides.kto"),
    # what the job fills in from the request or the model store may not be replaced silently
    ({"loss_overrides": {"apo": {"train": {"max_steps": 5}}}}, "train.max_steps set by the job itself"),
    ({"train_overrides": {"data": {"k": 3}}}, "data.k set by the job itself"),
    ({"train_overrides": {"policy": {"path": "/elsewhere"}}}, "policy.path set by the job itself"),
])
def test_overrides_no_job_could_train_with_are_refused_at_start(settings, message):
    with pytest.raises(ConfigError) as err:
        load_retrain_settings({**BASE, **settings})
    assert message in str(err.value)


def test_a_misspelt_key_in_train_overrides_gets_no_misleading_hint():
    with pytest.raises(ConfigError) as err:
        load_retrain_settings({**BASE, "train_overrides": {"optim": {"lrr": 1e-4}}})
    assert "loss_overrides.<loss>" not in str(err.value)


def test_the_shipped_retrain_config_loads_for_every_loss():
    from apo_core.config import find_shared_config

    settings = load_retrain_settings(find_shared_config("retrain.yaml"))
    for loss in ("apo", "kto", "dpo", "bc"):
        assert settings.overrides_for(loss)["train"]["batch_size"] == 8
