"""Retrain jobs end to end without ROS: real bags -> conversion -> APO training -> evaluation -> promotion."""

import time

import numpy as np
import pytest

from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.retrain.job import RetrainManager, RetrainRequest, is_heldout
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.testing import tiny_policy

A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1,
                   "log_every": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}


def _bags(root, ids, offset=0):
    for i, ep in enumerate(ids):
        write_sample_bag(root, SampleEpisode(ep, [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                             start_ns=(1_700_000_000 + 100 * (i + offset)) * 10**9))


def _setup(tmp_path, n=3, **settings):
    actions = np.stack([sample_action(i) for i in range(200)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    _bags(tmp_path / "bags", [f"ep{i:02d}" for i in range(n)])
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"),
           "model_store": str(store.root), "defaults": {"steps": 3}, "train_overrides": TRAIN,
           "eval": {"heldout_every": 0}}
    for key, value in settings.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return store, RetrainManager(load_retrain_settings(cfg))


def test_job_trains_evaluates_and_promotes(tmp_path):
    promoted = []
    store, m = _setup(tmp_path, n=4)
    m._on_promoted = promoted.append
    ok, job_id, reason = m.submit(RetrainRequest())
    assert ok, reason
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    assert store.current_version() == "v0002" and promoted == ["v0002"]
    assert status.candidate_version == "v0002" and status.base_version == "v0001" and status.progress == 1.0
    assert sorted(status.train_episodes) == ["ep00", "ep01", "ep02", "ep03"]
    assert (m.jobs_dir / job_id / "train.log").is_file()
    # nothing new now
    ok, _, reason = m.submit(RetrainRequest())
    assert not ok and "nothing new to train on" in reason
    # a new episode arrives -> next round trains from v0002
    _bags(tmp_path / "bags", ["ep10"], offset=10)
    ok, _, reason = m.submit(RetrainRequest(loss="kto", steps=2))
    assert ok, reason
    assert m.wait(300).state == "succeeded" and store.current_version() == "v0003"
    assert store.history()[-1]["note"]["base"] == "v0002"
    # rollback restores the previous version
    ok, msg, current = m.rollback()
    assert ok and current == "v0002" and store.current_version() == "v0002"


def test_an_unusable_bag_is_skipped_and_reported_not_fatal(tmp_path):
    """One episode recorded without camera images (a run with no model) must not fail this job or later ones."""
    store, m = _setup(tmp_path, n=2)
    write_sample_bag(tmp_path / "bags", SampleEpisode("noimg", [A] * 27, image_size=(16, 16), image_every=0,
                                                      start_ns=1_700_009_000 * 10**9))
    ok, job_id, reason = m.submit(RetrainRequest())
    assert ok, reason
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    assert "noimg" in status.train_episodes and store.current_version() == "v0002"
    assert any("1 train episode bag(s) skipped as unusable: noimg" in w and "no camera image" in w
               for w in status.warnings), status.warnings
    assert "skipped as unusable: noimg" in status.message and status.metrics["train_bags_skipped"] == 1.0
    # The next round (a new good episode) trains as usual.
    _bags(tmp_path / "bags", ["ep10"], offset=10)
    ok, _, reason = m.submit(RetrainRequest(steps=2))
    assert ok, reason
    assert m.wait(300).state == "succeeded" and store.current_version() == "v0003"


def test_a_job_whose_bags_are_all_unusable_fails_clearly(tmp_path):
    store, m = _setup(tmp_path, n=0)
    write_sample_bag(tmp_path / "bags", SampleEpisode("noimg", [A] * 27, image_size=(16, 16), image_every=0))
    ok, _, reason = m.submit(RetrainRequest())
    assert ok, reason
    status = m.wait(300)
    assert status.state == "failed" and "none of the 1 training episode bag(s) could be converted" in status.message
    assert store.current_version() == "v0001"


def test_heldout_gate_and_dry_run(tmp_path):
    store, m = _setup(tmp_path, n=6, eval={"heldout_every": 2, "max_l1_ratio": 100.0})
    ok, _, reason = m.submit(RetrainRequest(dry_run=True))
    assert ok and "dry run" in m.wait(30).message and store.current_version() == "v0001"
    ok, _, reason = m.submit(RetrainRequest())
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    expected_heldout = [e for e in status.train_episodes + status.heldout_episodes if is_heldout(e, 2)]
    assert sorted(status.heldout_episodes) == sorted(expected_heldout)
    if status.heldout_episodes:
        assert "heldout_l1_candidate" in status.metrics and "heldout_l1_base" in status.metrics


def test_rejections(tmp_path):
    store, m = _setup(tmp_path, n=2, train_overrides={"train": {"step_delay_s": 0.5}}, defaults={"steps": 50})
    assert m.submit(RetrainRequest(loss="ppo"))[2].startswith("unknown loss")
    assert "not found" in m.submit(RetrainRequest(episodes=["nope"]))[2]
    ok, job_id, _ = m.submit(RetrainRequest())
    assert ok
    ok2, _, reason = m.submit(RetrainRequest())
    assert not ok2 and "already running" in reason
    # rollback is refused while a job runs
    assert not m.rollback()[0]
    # cancel mid-training: deployed version unchanged
    deadline = time.monotonic() + 120
    while m.status().state != "training" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.cancel(job_id)[0]
    status = m.wait(120)
    assert status.state == "cancelled" and store.current_version() == "v0001" and store.versions() == ["v0001"]


def test_failed_training_leaves_version_unchanged(tmp_path):
    store, m = _setup(tmp_path, n=2, backend={"kind": "command", "command": "echo training node lost; exit 3"})
    ok, _, _ = m.submit(RetrainRequest())
    status = m.wait(120)
    assert ok and status.state == "failed" and "code 3" in status.message and "training node lost" in status.message
    assert store.current_version() == "v0001" and store.versions() == ["v0001"]
    # the episodes were not consumed: a later job may use them
    assert m.new_episodes() == ["ep00", "ep01"]


def test_interrupted_job_is_marked_failed_on_restart(tmp_path):
    store, m = _setup(tmp_path, n=2)
    job = "job-20250101-120000-abcdef"  # job ids have RetrainManager's form; others are refused
    (m.jobs_dir / job).mkdir()
    (m.jobs_dir / job / "status.json").write_text(f'{{"job_id": "{job}", "state": "training"}}')
    m2 = RetrainManager(m.settings)
    assert m2.status(job).state == "failed" and "interrupted" in m2.status(job).message


def test_settings_reject_unknown_keys(tmp_path):
    from apo_core.errors import ConfigError

    with pytest.raises(ConfigError, match="lifelong_every"):
        load_retrain_settings({"lifelong_every": 3})
    with pytest.raises(ConfigError, match="backend.command"):
        load_retrain_settings({"backend": {"kind": "command"}})


def test_promotion_stands_when_the_policy_node_cannot_be_told(tmp_path):
    store, m = _setup(tmp_path, n=2)

    def unreachable(version):
        raise RuntimeError("policy node gone")

    m._on_promoted = unreachable
    assert m.submit(RetrainRequest())[0]
    status = m.wait(300)
    assert status.state == "succeeded" and "policy node gone" in status.message
    assert store.current_version() == "v0002"


def test_command_backend_runs_the_configured_command_line(tmp_path):
    # What a GPU node through ssh / a scheduler looks like, minus the ssh: a shell command over shared paths.
    store, m = _setup(tmp_path, n=2, backend={
        "kind": "command", "command": "echo remote job {job_id}; {python} -m apo_trainer.train --config {config}"})
    assert m.submit(RetrainRequest())[0]
    status = m.wait(300)
    assert status.state == "succeeded", status.message
    assert store.current_version() == "v0002"
    log = (m.jobs_dir / status.job_id / "train.log").read_text()
    assert f"remote job {status.job_id}" in log
