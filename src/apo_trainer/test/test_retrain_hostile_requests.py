"""Hostile retrain requests: to the real RetrainManager and settings, then to the real node over real DDS.

Each request is refused before any job exists, with a reason naming the field and the limit; names that
would become paths (episodes, job ids, versions) never reach outside their root; the node keeps serving.
"""

import json
import os

import numpy as np
import pytest
import yaml

from apo_core.errors import ConfigError
from apo_core.model_store import ModelStore
from apo_core.names import InvalidNameError
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.retrain.job import RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.testing import tiny_policy

A, H = 1, 2
JOB = "job-20250101-120000-abcdef"  # well formed, never run


def make_world(tmp_path, **settings):
    """A store with v0001, one real episode bag, and directories beside them that no request may reach."""
    actions = np.stack([sample_action(i) for i in range(50)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    write_sample_bag(tmp_path / "bags", SampleEpisode("ep0", [A] * 8 + [H] * 4, image_size=(16, 16)))
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "bags" / "link_out")  # a symlink out of bags_dir
    (tmp_path / "evilver").mkdir()  # what versions/../../evilver names
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
           "defaults": {"steps": 3}, "eval": {"heldout_every": 0}, **settings}
    return store, cfg


def hostile_retrain_requests(tmp_path):
    """(request fields, words the refusal must contain); dry_run everywhere so nothing trains if one got through."""
    return [
        ({"steps": 2**31 - 1}, ["steps", "1000000"]),
        ({"steps": -1}, ["steps", "1000000"]),
        ({"k": 2**31 - 1}, ["k_window", "1000"]),
        ({"k": -5}, ["k_window", "-1"]),
        ({"loss": "ppo"}, ["loss", "ppo"]),
        ({"loss": "x" * 100_000}, ["loss"]),
        ({"episodes": ["../outside"]}, ["episodes", "../outside"]),
        ({"episodes": ["../../x"]}, ["episodes", "../../x"]),
        ({"episodes": [str(tmp_path / "outside")]}, ["episodes", "not a plain name"]),
        ({"episodes": ["link_out"]}, ["episodes", "outside"]),
        ({"episodes": ["x" * 300]}, ["episodes", "300 characters"]),
        ({"episodes": [""]}, ["episodes", "empty"]),
        ({"episodes": ["ep0"] * 20_000}, ["episodes", "20000", "10000"]),
        ({"episodes": ["nope"]}, ["episodes", "not found", "nope"]),
    ]


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
    from apo_core.config import load_config
    from apo_trainer.retrain.node_config import RetrainNodeConfig

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
    # the node's own parameters have the same limits
    with pytest.raises(ConfigError, match="steps"):
        load_config(RetrainNodeConfig, {"steps": 2**31 - 1})
    with pytest.raises(ConfigError, match="lifelong_delay_s"):
        load_config(RetrainNodeConfig, {"lifelong_delay_s": -1.0})
    node_cfg = load_config(RetrainNodeConfig, {"steps": 7, "bags_dir": "b", "lifelong_every_n_episodes": 0})
    assert node_cfg.settings_overrides() == {"bags_dir": "b", "lifelong_every_n_episodes": 0, "defaults": {"steps": 7}}


def _config(tmp_path):
    # min_new_episodes 2 with one bag: an empty request is refused ("nothing new"), never starts training
    store, cfg = make_world(tmp_path, min_new_episodes=2)
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(cfg))
    return store, tmp_path / "retrain.yaml"


@pytest.mark.ros
def test_hostile_requests_to_every_retrain_service(tmp_path):
    from rclpy.parameter import Parameter

    from apo_core import topics
    from apo_interfaces.msg import EpisodeEvent, RetrainStatus
    from apo_interfaces.srv import CancelRetrain, GetRetrainStatus, Retrain, Rollback
    from apo_ros.qos import topic_qos
    from apo_ros.testing import RosGraph
    from apo_trainer.retrain_node import RetrainNode

    store, cfg = _config(tmp_path)
    with RosGraph() as g:
        node = g.add(RetrainNode(context=g.context, parameter_overrides=[
            Parameter("config_file", value=str(cfg)), Parameter("lifelong_every_n_episodes", value=1000)]))
        probe = g.probe_node()
        retrain = probe.create_client(Retrain, topics.RETRAIN)
        get_status = probe.create_client(GetRetrainStatus, topics.RETRAIN_STATUS)
        cancel = probe.create_client(CancelRetrain, topics.RETRAIN_CANCEL)
        rollback = probe.create_client(Rollback, topics.RETRAIN_ROLLBACK)
        for client in (retrain, get_status, cancel, rollback):
            assert client.wait_for_service(timeout_sec=30), client.srv_name

        # /apo/retrain: the ROS-free cases (field names as in Retrain.srv), and an empty request
        for fields, words in hostile_retrain_requests(tmp_path) + [({}, ["nothing new"])]:
            fields = {"k_window" if k == "k" else k: v for k, v in fields.items()}
            res = g.call(retrain, Retrain.Request(dry_run=bool(fields), **fields), timeout=30)
            assert not res.accepted and not res.job_id, res.reason[:300]
            assert all(word in res.reason for word in words), (words, res.reason[:300])

        # /apo/retrain/get_status and /apo/retrain/cancel: malformed job ids
        for bad in ("x" * 300, "../../x", "/etc/passwd", "job-x", "é" * 50, "x" * 100_000):
            got = g.call(get_status, GetRetrainStatus.Request(job_id=bad), timeout=30).status
            assert got.state == RetrainStatus.STATE_IDLE and "invalid job id" in got.message and len(got.message) < 600
            res = g.call(cancel, CancelRetrain.Request(job_id=bad), timeout=30)
            assert not res.success and "job id" in res.message
        got = g.call(get_status, GetRetrainStatus.Request(job_id=JOB), timeout=30).status
        assert got.state == RetrainStatus.STATE_IDLE and "unknown job" in got.message
        assert not g.call(cancel, CancelRetrain.Request(), timeout=30).success  # nothing running

        # /apo/retrain/rollback: nothing but an existing vNNNN under versions/
        for bad in ("../../evilver", "v0001/../../evilver", str(tmp_path / "evilver"), "v9999", "x" * 300, ""):
            res = g.call(rollback, Rollback.Request(version=bad), timeout=30)
            assert not res.success and res.current_version == "v0001", (bad[:50], res.message)
        assert os.readlink(store.current_link) == os.path.join("versions", "v0001")

        # the episode subscription: odd events are ignored or counted, never fatal
        pub = probe.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))
        g.wait_for_subscribers(pub)
        for event in (EpisodeEvent(episode_id="x" * 100_000, event=EpisodeEvent.EVENT_END),
                      EpisodeEvent(episode_id="../../x", event=255), EpisodeEvent()):
            pub.publish(event)

        # the node still answers good requests: status, a dry run on the real bag, a rollback to v0001
        assert g.call(get_status, GetRetrainStatus.Request(), timeout=30).status.state == RetrainStatus.STATE_IDLE
        res = g.call(retrain, Retrain.Request(episodes=["ep0"], steps=5, k_window=3, dry_run=True), timeout=30)
        assert res.accepted and res.base_version == "v0001", res.reason
        g.wait_until(lambda: g.call(get_status, GetRetrainStatus.Request(job_id=res.job_id), timeout=30).status.state
                     == RetrainStatus.STATE_SUCCEEDED, timeout=60, what="dry run done")
        got = g.call(get_status, GetRetrainStatus.Request(job_id=res.job_id), timeout=30).status
        assert "5 steps with K=3" in got.message
        res = g.call(rollback, Rollback.Request(version="v0001"), timeout=30)
        assert res.success and res.current_version == "v0001", res.message
        assert not g.errors and node.guard.errors == 0  # every refusal came from a check, none from a crash
    assert store.versions() == ["v0001"]
