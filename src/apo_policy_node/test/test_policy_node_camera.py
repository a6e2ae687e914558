"""The policy node refuses a policy trained on another camera's images, over real DDS.

Its ``camera`` parameter (the deploy graph passes its ``camera:=`` argument) names what the image topic
shows; a policy whose apo_policy.json records another training camera is not loaded, neither as the
version it starts with (it does not come up, as with any policy that cannot run) nor on /apo/policy/load
(refused, the running version stays).
"""

import json

import pytest

from apo_core import topics
from apo_core.errors import ConfigError
from apo_core.model_store import ModelStore
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_policy_node.policy_source import PolicySource
from apo_ros.testing import RosGraph

pytestmark = pytest.mark.ros

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})
WRIST = "robot0_eye_in_hand"


def _saved(root, name: str, camera: str | None):
    policy = SmallVLAPolicy.create(seed=1, **TINY)
    policy.camera = camera
    return policy.save(root / name)


def test_policy_source_checks_the_camera_of_every_load(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.add(_saved(tmp_path, "agentview", "agentview"))
    store.add(_saved(tmp_path, "unnamed", None))
    assert PolicySource(store.root, camera=WRIST).load("v0002").version == "v0002"  # nothing recorded: loads
    assert PolicySource(store.root).load("v0001").camera == "agentview"  # the node names no camera: loads
    with pytest.raises(ConfigError, match=f"camera 'agentview'.*camera '{WRIST}'.*camera:=agentview"):
        PolicySource(store.root, camera=WRIST).load("v0001")
    # a recorded camera that is not a name is refused by the loader, whoever loads it
    meta_path = store.path("v0002") / "apo_policy.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "camera": 5}))
    with pytest.raises(ConfigError, match="'camera' must be a string, got 5"):
        PolicySource(store.root).load("v0002")


def test_a_policy_of_another_camera_is_never_loaded(tmp_path):
    from rclpy.parameter import Parameter

    from apo_interfaces.srv import LoadPolicy
    from apo_policy_node.policy_node import PolicyNode

    store = ModelStore(tmp_path / "models")
    store.add(_saved(tmp_path, "agentview", "agentview"))  # v0001
    store.add(_saved(tmp_path, "wrist", WRIST))  # v0002, current

    def params(**extra):
        return [Parameter("model_path", value=str(store.root)), Parameter("num_threads", value=1),
                Parameter("camera", value=WRIST)] + [Parameter(k, value=v) for k, v in extra.items()]

    with RosGraph() as g:
        # at start, as any policy that cannot run: the node does not come up (its process exits 2)
        with pytest.raises(ConfigError, match=f"camera 'agentview'.*camera:={WRIST}"):
            PolicyNode(context=g.context, parameter_overrides=params(model_version="v0001"))
        node = g.add(PolicyNode(context=g.context, parameter_overrides=params()))
        assert node.policy_version == "v0002"
        client = g.probe_node().create_client(LoadPolicy, topics.LOAD_POLICY)
        assert client.wait_for_service(timeout_sec=10)
        res = g.call(client, LoadPolicy.Request(version="v0001"))
        assert not res.success and "camera 'agentview'" in res.message and f"camera:={WRIST}" in res.message
        assert res.loaded_version == "v0002" and node.policy_version == "v0002"
