"""The policy node against hostile LoadPolicy requests and bad start parameters, over real DDS.

A request names a version of the configured model store, never a path: traversal, absolute paths,
existing directories, huge names, missing versions, a version symlinked outside the store and a
checkpoint that needs remote code are all refused with success=false, the running policy stays, and
the node still answers a good request. A bad start (no model_path, unknown parameter, unusable model)
ends with exit code 2 and one clear line, no traceback.
"""

import json
import signal
import subprocess
import sys

import pytest

from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_ros.testing import RosGraph, start_node_process, stop_process

pytestmark = pytest.mark.ros
MODULE = "apo_policy_node.policy_node"

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})

EVIL_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('remote code ran')\nclass EvilModel:\n    pass\n"


def make_evil_checkpoint(directory, marker):
    """A checkpoint whose auto_map names modeling_evil.py, which writes ``marker`` when imported."""
    directory.mkdir(parents=True)
    (directory / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    (directory / "config.json").write_text(json.dumps(
        {"model_type": "evil_vla", "auto_map": {"AutoModelForVision2Seq": "modeling_evil.EvilModel"}}))
    (directory / "dataset_statistics.json").write_text(json.dumps({"evil": {"action": {"q01": [-1.0] * 7,
                                                                                         "q99": [1.0] * 7}}}))
    return directory


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    """v0001, v0002: good; v0003: needs remote code; v0004: symlink to a good policy outside the store."""
    root = tmp_path_factory.mktemp("hostile")
    store = ModelStore(root / "models")
    for seed in (1, 2):
        store.add(SmallVLAPolicy.create(state_dim=9, seed=seed, **TINY).save(root / f"p{seed}"), make_current=False)
    marker = root / "marker"
    store.add(make_evil_checkpoint(root / "evil", marker), make_current=False)
    (store.versions_dir / "v0004").symlink_to(root / "p2")
    store.set_current("v0001")
    return store, marker


def hostile_requests(store):
    root = store.root.parent
    return {
        "../../x": "not a plain name",
        "../models/versions/v0002": "not a plain name",
        "/tmp/apo-no-such-dir": "not a plain name",
        str(root / "p2"): "not a plain name",  # an existing, loadable policy directory
        "p2": "does not match",
        "x" * 300: "300 characters",
        "v9999": "not found",
        "v0002/../v0001": "not a plain name",
        "v0004": "outside",
        "v0003": "needs remote code",
    }


def _check_hostile_then_good(g, client, store, marker, running="v0001"):
    from apo_interfaces.srv import LoadPolicy

    for version, words in hostile_requests(store).items():
        res = g.call(client, LoadPolicy.Request(version=version), timeout=60)
        assert not res.success, version
        assert words in res.message and res.loaded_version == running, (version, res.message)
        assert len(res.message) < 1000
    assert not marker.exists(), "the checkpoint's code ran"
    res = g.call(client, LoadPolicy.Request(version=""), timeout=60)  # the store's current version
    assert res.success and res.loaded_version == "v0001", res.message
    res = g.call(client, LoadPolicy.Request(version="v0002"), timeout=60)
    assert res.success and res.loaded_version == "v0002", res.message


def test_hostile_load_requests_are_refused_and_the_node_keeps_serving(hostile_store):
    from rclpy.parameter import Parameter

    from apo_interfaces.srv import LoadPolicy
    from apo_policy_node.policy_node import PolicyNode

    store, marker = hostile_store
    with RosGraph() as g:
        node = g.add(PolicyNode(context=g.context, parameter_overrides=[
            Parameter("model_path", value=str(store.root)), Parameter("num_threads", value=1)]))
        probe = g.probe_node()
        client = probe.create_client(LoadPolicy, topics.LOAD_POLICY)
        _check_hostile_then_good(g, client, store, marker)
        assert node.policy_version == "v0002"
        # nor can model_path / trust_remote_code be changed under the running node
        results = node.set_parameters([Parameter("model_path", value=str(store.root.parent / "p2")),
                                       Parameter("trust_remote_code", value=True)])
        assert not any(r.successful for r in results) and "read at start only" in results[0].reason
        assert node.get_parameter("trust_remote_code").value is False
        # one node, named once (the loader used to be a second node that a __node remap renamed too)
        g.wait_until(lambda: ("apo_policy", "/") in probe.get_node_names_and_namespaces(), what="node discovery")
        assert [n for n in probe.get_node_names() if n.startswith("apo_policy")] == ["apo_policy"]
        assert g.errors == []


def test_node_process_serves_hostile_requests_and_stops_cleanly(hostile_store, tmp_path):
    """The real entry point (single-threaded executor, loads on a loader thread), renamed as the launch does."""
    from apo_interfaces.srv import LoadPolicy

    store, marker = hostile_store
    log = tmp_path / "node.log"
    proc = start_node_process(MODULE, ["--ros-args", "-r", "__node:=apo_policy", "-p", f"model_path:={store.root}",
                                       "-p", "num_threads:=1"], log_path=str(log))
    try:
        with RosGraph() as g:
            client = g.probe_node().create_client(LoadPolicy, topics.LOAD_POLICY)
            _check_hostile_then_good(g, client, store, marker)
            assert proc.poll() is None, log.read_text()
    finally:
        rc = stop_process(proc, sig=signal.SIGINT)
    assert rc == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def bad_model_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_models")
    (root / "empty").mkdir()
    (root / "corrupt").mkdir()
    (root / "corrupt" / "apo_policy.json").write_text("{not json")
    (root / "afile").write_text("not a directory")
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("neither a store nor a policy")
    make_evil_checkpoint(root / "evil", root / "marker")
    return root


@pytest.mark.parametrize("params, words", [
    ([], ["model_path", "empty"]),
    (["model_path:="], ["invalid ROS arguments", "model_path"]),
    # (a missing or empty model_path is a store not filled yet: the node waits, see test_policy_node_waits.py)
    (["model_path:={root}/afile"], ["{root}/afile", "is not a directory"]),
    (["model_path:={root}/junk"], ["{root}/junk", "holds no APO policy"]),
    (["model_path:={root}/empty", "store_poll_s:=0.0"], ["store_poll_s", "> 0"]),
    (["model_path:={root}/corrupt"], ["{root}/corrupt/apo_policy.json", "JSON"]),
    (["model_path:={root}/evil"], ["needs remote code", "trust_remote_code"]),
    (["modle_path:={root}/empty"], ["'modle_path'", "did you mean 'model_path'", "trust_remote_code"]),
])
def test_bad_start_exits_2_with_a_clear_message(bad_model_paths, params, words):
    root = bad_model_paths
    args = ["--ros-args"]
    for p in params:
        args += ["-p", p.format(root=root)]
    proc = subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=180,
                          cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert all(w.format(root=root) in proc.stderr for w in words), proc.stderr
    assert "Traceback" not in out and "AttributeError" not in out
    assert not (root / "marker").exists()
