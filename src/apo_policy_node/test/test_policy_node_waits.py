"""The policy node without a policy yet, over real DDS: a missing model store is waited for.

It answers LoadPolicy while it waits (refused with "still no policy loaded" until the store has a
version), reports a first version that does not load on /diagnostics and keeps waiting, and loads
the next current version on its own. (The whole graph with `apo models import`:
src/apo_bringup/test/test_models_deploy.py.)
"""

import shutil

import pytest

from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph

pytestmark = pytest.mark.ros

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return SmallVLAPolicy.create(seed=1, **TINY).save(tmp_path_factory.mktemp("p") / "policy")


def _node(g, model_path, poll_s):
    from rclpy.parameter import Parameter

    from apo_policy_node.policy_node import PolicyNode

    return g.add(PolicyNode(context=g.context, parameter_overrides=[
        Parameter("model_path", value=str(model_path)), Parameter("num_threads", value=1),
        Parameter("store_poll_s", value=poll_s)]))


def test_load_requests_while_waiting(tmp_path, policy_dir):
    from apo_interfaces.srv import LoadPolicy

    root = tmp_path / "not" / "yet"
    with RosGraph() as g:
        node = _node(g, root, 3600.0)  # the service alone decides when to load here
        assert node.policy_version == ""
        client = g.probe_node().create_client(LoadPolicy, topics.LOAD_POLICY)
        assert client.wait_for_service(timeout_sec=10)
        res = g.call(client, LoadPolicy.Request(version=""))
        assert not res.success and "still no policy loaded" in res.message and "no current version" in res.message
        assert res.loaded_version == ""
        ModelStore(root).add(policy_dir)
        res = g.call(client, LoadPolicy.Request(version=""))
        assert res.success and res.loaded_version == "v0001", res.message
        assert res.message == "loaded 'v0001' (no policy before)"
        assert node.policy_version == "v0001"


def test_unloadable_first_version_is_reported_then_the_next_one_loads(tmp_path, policy_dir):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    root = tmp_path / "models"
    root.mkdir()
    diags = []
    with RosGraph() as g:
        node = _node(g, root, 0.1)
        g.probe_node().create_subscription(DiagnosticArray, topics.DIAGNOSTICS, diags.append,
                                           topic_qos(topics.DIAGNOSTICS))

        def last_status():
            mine = [s for arr in diags for s in arr.status if s.name == node.get_name()]
            return mine[-1] if mine else None
        g.wait_until(lambda: last_status() is not None, timeout=15, what="diagnostics")
        assert last_status().level == DiagnosticStatus.WARN
        assert "no policy loaded" in last_status().message and "apo models import" in last_status().message

        store = ModelStore(root)
        garbled = tmp_path / "garbled"
        shutil.copytree(policy_dir, garbled)
        (garbled / "model.safetensors").write_bytes(b"\x00" * 64)
        store.add(garbled)  # bypasses `apo models import`'s check, as a corrupted disk would
        g.wait_until(lambda: "failed to load" in (last_status().message or ""), timeout=30,
                     what="the failed load reported")
        assert last_status().level == DiagnosticStatus.WARN and "'v0001'" in last_status().message
        assert node.policy_version == ""

        store.add(policy_dir)  # v0002 becomes current: loaded without a request
        g.wait_until(lambda: node.policy_version == "v0002", timeout=30, what="v0002 loaded")
        g.wait_until(lambda: last_status().level == DiagnosticStatus.OK, timeout=15, what="diagnostics OK")
        assert last_status().message == "version v0002"
