"""A retrain job without expert demonstrations says so, over real DDS: in the Retrain reply, in every
RetrainStatus on /apo/retrain/status and in /apo/retrain/get_status. One of its episode bags is unusable
(recorded without camera images, as a run with no model gives): the job skips it, says which, and trains
and promotes on the rest."""

import numpy as np
import pytest
import yaml

from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.testing import tiny_policy

pytestmark = pytest.mark.ros
A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}
WARNING = "WARNING: no expert demonstrations"
SKIPPED = "1 train episode bag(s) skipped as unusable: noimg"


def test_job_reports_missing_expert_data_and_a_skipped_unusable_bag_in_its_status(tmp_path):
    from rclpy.parameter import Parameter

    from apo_interfaces.msg import RetrainStatus
    from apo_interfaces.srv import GetRetrainStatus, Retrain
    from apo_retrain.retrain_node import RetrainNode

    stats = ActionStats.from_actions(np.stack([sample_action(i) for i in range(200)]))
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(stats, state_dim=9).save(tmp_path / "base"))
    for i in range(2):
        write_sample_bag(tmp_path / "bags", SampleEpisode(f"ep{i}", [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                                         start_ns=(1_700_000_000 + 100 * i) * 10**9))
    write_sample_bag(tmp_path / "bags", SampleEpisode("noimg", [A] * 27, image_size=(16, 16), image_every=0,
                                                      start_ns=1_700_009_000 * 10**9))
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"),
                                   "model_store": str(store.root), "defaults": {"steps": 2}, "train_overrides": TRAIN,
                                   "eval": {"heldout_every": 0}}))
    statuses = []
    with RosGraph() as g:
        # expert_data "" as the deploy graph passes it by default
        g.add(RetrainNode(context=g.context, parameter_overrides=[Parameter("config_file", value=str(cfg)),
                                                                  Parameter("expert_data", value="")]))
        probe = g.probe_node()
        probe.create_subscription(RetrainStatus, topics.RETRAIN_STATUS_TOPIC, statuses.append,
                                  topic_qos(topics.RETRAIN_STATUS_TOPIC))
        res = g.call(probe.create_client(Retrain, topics.RETRAIN), Retrain.Request(), timeout=30)
        assert res.accepted and WARNING in res.reason, res.reason
        g.wait_until(lambda: statuses and statuses[-1].job_id == res.job_id and statuses[-1].state in (
            RetrainStatus.STATE_SUCCEEDED, RetrainStatus.STATE_FAILED, RetrainStatus.STATE_REJECTED),
            timeout=300, what="job end")
        final = statuses[-1]
        assert final.state == RetrainStatus.STATE_SUCCEEDED, final.message
        job = [s for s in statuses if s.job_id == res.job_id]
        assert {RetrainStatus.STATE_TRAINING, RetrainStatus.STATE_SUCCEEDED} <= {s.state for s in job}
        assert all(WARNING in s.message and "expert_data" in s.message for s in job)
        got = g.call(probe.create_client(GetRetrainStatus, topics.RETRAIN_STATUS),
                     GetRetrainStatus.Request(job_id=res.job_id))
        assert got.status.state == RetrainStatus.STATE_SUCCEEDED and WARNING in got.status.message
        assert got.status.message.startswith("promoted v0002")
        # the unusable bag: named in the final status on the topic and from the service, not fatal
        assert SKIPPED in final.message and "no camera image" in final.message, final.message
        assert SKIPPED in got.status.message
