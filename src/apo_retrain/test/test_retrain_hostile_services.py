"""Hostile requests to the retrain node: its parameters have the settings file's limits, and every service
(over real DDS) refuses the ROS-free cases of src/apo_trainer/test/test_retrain_hostile_requests.py with the
field and the limit, ignores odd episode events, and keeps serving good requests."""

import os

import pytest
import yaml

from apo_core.config import load_config
from apo_core.errors import ConfigError
from apo_retrain.node_config import RetrainNodeConfig
from apo_trainer.retrain.testing import JOB, hostile_retrain_requests, make_world


def test_node_parameters_have_the_settings_limits():
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
    from apo_retrain.retrain_node import RetrainNode
    from apo_ros.qos import topic_qos
    from apo_ros.testing import RosGraph

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
