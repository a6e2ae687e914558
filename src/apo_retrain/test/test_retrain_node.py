"""The /apo/retrain service over real DDS, with the real policy node picking up promoted versions."""

import signal
import time

import numpy as np
import pytest
import yaml

from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph, start_node_process, stop_process
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.testing import tiny_policy

pytestmark = pytest.mark.ros
A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}


def _world(tmp_path, n_bags=3, **extra):
    actions = np.stack([sample_action(i) for i in range(200)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    for i in range(n_bags):
        write_sample_bag(tmp_path / "bags", SampleEpisode(f"ep{i}", [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                                         start_ns=(1_700_000_000 + 100 * i) * 10**9))
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
           "defaults": {"steps": 3}, "train_overrides": TRAIN, "eval": {"heldout_every": 0}, **extra}
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(cfg))
    return store, tmp_path / "retrain.yaml"


def test_retrain_service_promotes_and_policy_node_reloads(tmp_path):
    from rclpy.parameter import Parameter

    from apo_interfaces.msg import RetrainStatus
    from apo_interfaces.srv import GetRetrainStatus, Retrain, Rollback
    from apo_policy_node.policy_node import PolicyNode
    from apo_retrain.retrain_node import RetrainNode

    store, cfg = _world(tmp_path, train_overrides={**TRAIN, "train": {**TRAIN["train"], "step_delay_s": 0.3}})
    statuses = []
    with RosGraph() as g:
        policy = g.add(PolicyNode(context=g.context, parameter_overrides=[
            Parameter("model_path", value=str(store.root)), Parameter("num_threads", value=1)]))
        g.add(RetrainNode(context=g.context, parameter_overrides=[Parameter("config_file", value=str(cfg))]))
        probe = g.probe_node()
        probe.create_subscription(RetrainStatus, topics.RETRAIN_STATUS_TOPIC, statuses.append,
                                  topic_qos(topics.RETRAIN_STATUS_TOPIC))
        retrain = probe.create_client(Retrain, topics.RETRAIN)
        res = g.call(retrain, Retrain.Request(), timeout=30)
        assert res.accepted and res.job_id and res.base_version == "v0001", res.reason
        again = g.call(retrain, Retrain.Request(), timeout=30)
        assert not again.accepted and "already running" in again.reason
        g.wait_until(lambda: statuses and statuses[-1].state in (RetrainStatus.STATE_SUCCEEDED,
                                                                 RetrainStatus.STATE_FAILED),
                     timeout=300, what="job end")
        final = statuses[-1]
        assert final.state == RetrainStatus.STATE_SUCCEEDED, final.message
        assert final.deployed_version == "v0002" and final.job_id == res.job_id
        assert {RetrainStatus.STATE_CONVERTING, RetrainStatus.STATE_TRAINING} <= {s.state for s in statuses}
        progress = [s.progress for s in statuses]
        assert progress == sorted(progress)
        g.wait_until(lambda: policy.policy_version == "v0002", timeout=60, what="policy node reload")
        got = g.call(probe.create_client(GetRetrainStatus, topics.RETRAIN_STATUS), GetRetrainStatus.Request())
        assert got.status.state == RetrainStatus.STATE_SUCCEEDED and got.status.candidate_version == "v0002"
        # nothing new to train on -> rejected with the reason
        res = g.call(retrain, Retrain.Request(), timeout=30)
        assert not res.accepted and "nothing new" in res.reason
        # rollback -> the policy node runs v0001 again
        rb = g.call(probe.create_client(Rollback, topics.RETRAIN_ROLLBACK), Rollback.Request(), timeout=30)
        assert rb.success and rb.current_version == "v0001"
        g.wait_until(lambda: policy.policy_version == "v0001", timeout=60, what="policy node rollback")


def test_killed_retrain_job_leaves_deployed_version(tmp_path):
    from apo_interfaces.srv import Retrain

    store, cfg = _world(tmp_path, n_bags=2, train_overrides={**TRAIN, "train": {**TRAIN["train"], "step_delay_s": 1.0}},
                        defaults={"steps": 100})
    proc = start_node_process("apo_retrain.retrain_node", ["--ros-args", "-p", f"config_file:={cfg}"],
                              log_path=str(tmp_path / "node.log"))
    try:
        with RosGraph() as g:
            probe = g.probe_node()
            res = g.call(probe.create_client(Retrain, topics.RETRAIN), Retrain.Request(), timeout=60)
            assert res.accepted, res.reason
            job = tmp_path / "work" / "jobs" / res.job_id
            g.wait_until(lambda: (job / "train.log").exists(), timeout=120, what="training started")
            time.sleep(2.0)
    finally:
        stop_process(proc, sig=signal.SIGKILL)
    assert store.current_version() == "v0001" and store.versions() == ["v0001"]
    # the next start of the service reports the interrupted job as failed
    from apo_trainer.retrain.job import RetrainManager
    from apo_trainer.retrain.settings import load_retrain_settings

    m = RetrainManager(load_retrain_settings(str(cfg)))
    assert m.status(res.job_id).state == "failed" and "interrupted" in m.status(res.job_id).message


def test_lifelong_mode_retrains_every_n_episodes(tmp_path):
    from rclpy.parameter import Parameter

    from apo_interfaces.msg import EpisodeEvent, RetrainStatus
    from apo_retrain.retrain_node import RetrainNode

    store, cfg = _world(tmp_path, n_bags=2)
    statuses = []
    with RosGraph() as g:
        g.add(RetrainNode(context=g.context, parameter_overrides=[
            Parameter("config_file", value=str(cfg)), Parameter("lifelong_every_n_episodes", value=2),
            Parameter("lifelong_delay_s", value=0.2)]))
        probe = g.probe_node()
        probe.create_subscription(RetrainStatus, topics.RETRAIN_STATUS_TOPIC, statuses.append,
                                  topic_qos(topics.RETRAIN_STATUS_TOPIC))
        pub = probe.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))
        g.wait_for_subscribers(pub)
        # one finished episode: not yet
        pub.publish(EpisodeEvent(episode_id="ep0", event=EpisodeEvent.EVENT_SUCCESS))
        pub.publish(EpisodeEvent(episode_id="ep0", event=EpisodeEvent.EVENT_END))  # same episode, counted once
        time.sleep(1.5)
        assert not any(s.job_id for s in statuses)
        # the second one triggers a job on the new bags
        pub.publish(EpisodeEvent(episode_id="ep1", event=EpisodeEvent.EVENT_FAILURE))
        g.wait_until(lambda: statuses and statuses[-1].state in (RetrainStatus.STATE_SUCCEEDED,
                                                                 RetrainStatus.STATE_FAILED),
                     timeout=300, what="lifelong job end")
        assert statuses[-1].state == RetrainStatus.STATE_SUCCEEDED, statuses[-1].message
    assert store.current_version() == "v0002"
