"""Hostile retrain requests to the real RetrainManager and settings: each is refused before any job exists,
with a reason naming the field and the limit; names that would become paths (episodes, job ids, versions)
never reach outside their root. (The same requests to the node over real DDS:
src/apo_retrain/test/test_retrain_hostile_services.py.)
"""

import json
import os

import pytest

from apo_core.errors import ConfigError
from apo_core.names import InvalidNameError
from apo_trainer.retrain.job import RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.retrain.testing import JOB, hostile_retrain_requests, make_world


def test_hostile_retrain_requests_are_refused_with_the_field_and_limit(tmp_path):
    store, cfg = make_world(tmp_path)
    m = RetrainManager(load_retrain_settings(cfg))
    for fields, words in hostile_retrain_requests(tmp_path):
        ok, job_id, reason = m.submit(RetrainRequest(dry_run=True, **fields))
        assert not ok and not job_id, (fields if len(str(fields)) < 200 else list(fields), reason)
        for word in words:
            assert word in reason, (word, reason)
        assert len(reason) < 600, reason  # a huge value is not echoed back in full
    assert not list(m.jobs_dir.iterdir()) and store.current_version() == "v0001"
    # and a good request still goes through
    ok, job_id, reason = m.submit(RetrainRequest(episodes=["ep0", "ep0"], steps=1_000_000, k=1000, dry_run=True))
    assert ok, reason
    status = m.wait(60)
    assert status.state == "succeeded" and "K=1000" in status.message and status.train_episodes == ["ep0"]


def test_job_ids_and_versions_from_requests_stay_in_their_directory(tmp_path):
    store, cfg = make_world(tmp_path)
    m = RetrainManager(load_retrain_settings(cfg))
    for bad in ("x" * 300, "../../x", "/etc", "job-x", "job-20250101-120000-abcdef/../.."):
        with pytest.raises(InvalidNameError, match="job id"):
            m.status(bad)
        ok, message = m.cancel(bad)
        assert not ok and "job id" in message
    assert m.status(JOB) is None  # well formed but unknown
    # a damaged status file of a real job id is reported, not raised
    (m.jobs_dir / JOB).mkdir()
    (m.jobs_dir / JOB / "status.json").write_text(json.dumps({"job_id": JOB, "state": "exploded"}))
    assert m.status(JOB).state == "failed" and "unreadable" in m.status(JOB).message
    # rollback: only a vNNNN that exists under versions/
    for bad in ("../../evilver", "v0001/../../evilver", str(tmp_path / "evilver"), "v9999", "x" * 300, "current"):
        ok, message, current = m.rollback(bad)
        assert not ok and "version" in message and current == "v0001", (bad, message)
    assert os.readlink(store.current_link) == os.path.join("versions", "v0001")
    ok, message, current = m.rollback("v0001")
    assert ok and current == "v0001", message


def test_settings_file_limits(tmp_path):
    cases = [({"defaults": {"steps": 2**31 - 1}}, "defaults.steps"), ({"defaults": {"steps": 0}}, "defaults.steps"),
             ({"defaults": {"k": 5000}}, "defaults.k"), ({"defaults": {"k": -1}}, "defaults.k"),
             ({"backend": {"nproc": 0}}, "backend.nproc"), ({"lifelong_every_n_episodes": -3}, "lifelong_every"),
             ({"eval": {"heldout_every": -1}}, "eval.heldout_every"),
             ({"backend": {"kind": "command", "command": "run {config} {wrk_dir}"}}, "unknown placeholder {wrk_dir}"),
             ({"backend": {"kind": "command", "command": "echo ${HOME}"}}, "unknown placeholder {HOME}"),
             ({"backend": {"kind": "command", "command": "echo {"}}, "backend.command")]
    for data, words in cases:
        with pytest.raises(ConfigError, match=words.replace("{", r"\{").replace("}", r"\}")):
            load_retrain_settings(data)
    assert load_retrain_settings({"defaults": {"steps": 1_000_000, "k": 0}}).defaults.k == 0
    assert load_retrain_settings({"backend": {"kind": "command", "command": "echo $${{HOME}} {work_dir}"}})
