"""Model import -> deploy graph -> actions, over real DDS, with the graph started as `apo deploy` starts
it (config/deploy.yaml, each node its own process, ``-r __node:=<name>``).

The graph starts on an empty model store: the policy node stays up, says "no policy loaded" (WARN,
its own name) on /diagnostics and proposes nothing while the arbiter holds; `apo models import`
of a training run's output makes it load the policy and actions flow. Every node name in the graph
is unique (the policy node once had a companion node renamed to /apo_policy by that remap).
"""

import json
from collections import Counter

import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from apo_bringup.runner import GraphRunner
from apo_cli.cli import main as apo_main
from apo_core import topics
from apo_core.model_store import ModelStore
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph
from apo_trainer.testing import tiny_policy

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _policy_status(arrays, name="apo_policy"):
    """The latest status the policy node published, or None."""
    for arr in reversed(arrays):
        for st in arr.status:
            if st.name == name:
                return st
    return None


def _values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def _training_run(tmp_path):
    """A directory laid out as apo-train writes it: <run>/policy/ + metrics.jsonl."""
    run = tmp_path / "bc_run"
    tiny_policy(seed=5).save(run / "policy")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "loss": 1.0}) + "\n")
    return run


def test_empty_store_waits_then_import_makes_actions_flow(tmp_path):
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image

    from apo_core.image_codec import rgb_to_image_fields
    from apo_interfaces.msg import ActionCommand, EpisodeEvent

    store_root = tmp_path / "models"
    store_root.mkdir()  # empty, as a user's fresh directory
    run = _training_run(tmp_path)
    specs = resolve_graph(load_graph_file(default_graph_path()), {
        "robot": "real", "operator": "none", "record": False, "retrain": False, "model_path": str(store_root),
        "instruction": "lift the red cube", "policy_threads": 1})
    assert {s.name for s in specs} == {"apo_policy", "apo_arbiter"}
    runner = GraphRunner(specs, log_dir=tmp_path / "logs", echo=False)
    diags, actions, commands = [], [], []
    rng = np.random.default_rng(0)
    runner.start()
    try:
        with RosGraph() as g:
            probe = g.probe_node()
            probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, diags.append, topic_qos(topics.DIAGNOSTICS))
            probe.create_subscription(ActionCommand, topics.POLICY_ACTION, actions.append,
                                      topic_qos(topics.POLICY_ACTION))
            probe.create_subscription(ActionCommand, topics.COMMAND, commands.append, topic_qos(topics.COMMAND))
            img_pub = probe.create_publisher(Image, topics.IMAGE, topic_qos(topics.IMAGE))
            ep_pub = probe.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))

            def send_frame():
                msg = Image(**rgb_to_image_fields(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
                msg.header.stamp = probe.get_clock().now().to_msg()
                img_pub.publish(msg)
                return True

            g.wait_for_subscribers(img_pub, timeout=120)
            g.wait_for_subscribers(ep_pub, timeout=120)
            ep_pub.publish(EpisodeEvent(event=EpisodeEvent.EVENT_START, episode_id="e1",
                                        instruction="lift the red cube"))

            # waiting: WARN "no policy loaded" under the node's own name, frames seen and not answered
            def waiting_and_dropping():
                send_frame()
                st = _policy_status(diags)
                return st is not None and int(_values(st).get("no_policy", 0)) >= 1
            g.wait_until(waiting_and_dropping, timeout=120, interval=0.2, what="policy node waiting without a policy")
            st = _policy_status(diags)
            assert st.level == DiagnosticStatus.WARN and st.message.startswith("no policy loaded"), st
            assert str(store_root) in st.message and _values(st)["version"] == ""
            assert actions == []
            g.wait_until(lambda: any(c.source == ActionCommand.SOURCE_HOLD for c in commands), timeout=60,
                         what="the arbiter holding")
            assert runner.poll() is None, runner.failed

            # node names are unique in the graph (the remap once gave two nodes the name apo_policy)
            def names():
                return Counter(name for name, _ in probe.get_node_names_and_namespaces())
            g.wait_until(lambda: {"apo_policy", "apo_arbiter"} <= set(names()), timeout=30, what="graph nodes")
            duplicated = {n: c for n, c in names().items() if c > 1}
            assert not duplicated, names()

            # the user imports a trained policy with the CLI: the node loads it and proposes actions
            assert apo_main(["models", "import", str(run), "--store", str(store_root)]) == 0
            assert ModelStore(store_root).current_version() == "v0001"
            g.wait_until(lambda: send_frame() and len(actions) >= 3, timeout=120, interval=0.2,
                         what="actions after the import")
            assert {a.policy_version for a in actions} == {"v0001"}
            assert all(len(a.action) == 7 and np.all(np.isfinite(a.action)) for a in actions)
            g.wait_until(lambda: (_policy_status(diags) or st).level == DiagnosticStatus.OK, timeout=30, what="diagnostics OK")
            assert _policy_status(diags).message == "version v0001"
            assert runner.poll() is None, runner.failed
    finally:
        codes = runner.stop()
    assert all(code in (0, -2, 130) for code in codes.values()), codes
