"""Where a frame's time goes in the policy node: the rolling stage window, the garbage collector's pauses,
and the node's diagnostics carrying both (bench/bench_control_loop.py prints them)."""

import gc

import numpy as np
import pytest

from apo_policy_node.stage_times import STAGES, StageTimes


def test_summary_is_median_p95_max_per_stage_over_the_window():
    times = StageTimes(window=100)
    for v in range(1, 201):  # only the last 100 stay: 101..200
        times.record(predict=float(v))
    times.record(wait=2.0, decode=0.5)
    s = times.summary()
    med, p95, mx = (float(x) for x in s["predict_ms"].split("/"))
    assert (med, mx) == (150.5, 200.0) and p95 == pytest.approx(np.percentile(np.arange(101, 201), 95), abs=0.05)
    assert s["wait_ms"] == "2.0/2.0/2.0" and s["publish_ms"] == "-"
    assert set(STAGES) <= {k.removesuffix("_ms") for k in s}


def test_garbage_collections_are_timed_while_watched():
    times = StageTimes()
    times.watch_gc()
    try:
        gc.collect()
        gc.collect()
    finally:
        times.unwatch_gc()
    assert times.gc_collections >= 2 and times.summary()["gc_ms"] != "-"
    n = times.gc_collections
    gc.collect()
    assert times.gc_collections == n  # unwatched: no callback left behind


@pytest.mark.ros
def test_node_diagnostics_report_its_stages(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from apo_core import topics
    from apo_core.image_codec import rgb_to_image_fields
    from apo_core.model_store import ModelStore
    from apo_core.policy.small_vla import SmallVLAPolicy
    from apo_interfaces.msg import ActionCommand, RobotState
    from apo_policy_node.policy_node import PolicyNode
    from apo_ros.qos import qos_profile, topic_qos
    from apo_ros.testing import RosGraph

    tiny = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
                text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "num_key_value_heads": 2})
    store = ModelStore(tmp_path / "models")
    store.add(SmallVLAPolicy.create(state_dim=9, seed=1, **tiny).save(tmp_path / "p"))
    rng = np.random.default_rng(0)
    got, diags = [], []
    with RosGraph() as g:
        node = g.add(PolicyNode(context=g.context, parameter_overrides=[
            Parameter("model_path", value=str(store.root)), Parameter("num_threads", value=1),
            Parameter("instruction", value="lift the red cube")]))
        probe = g.probe_node()
        probe.create_subscription(ActionCommand, topics.POLICY_ACTION, got.append, topic_qos(topics.POLICY_ACTION))
        probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, diags.append, qos_profile("reliable", 10))
        img_pub = probe.create_publisher(Image, topics.IMAGE, topic_qos(topics.IMAGE))
        st_pub = probe.create_publisher(RobotState, topics.ROBOT_STATE, topic_qos(topics.ROBOT_STATE))
        g.wait_for_subscribers(img_pub)
        g.wait_for_subscribers(st_pub)
        for _ in range(3):
            n = len(got)
            stamp = probe.get_clock().now().to_msg()
            st = RobotState(proprio=[0.1] * 9)
            st.header.stamp = stamp
            st_pub.publish(st)
            # the state must be there before the frame is answered (else the frame counts as no_state)
            g.wait_until(lambda stamp=stamp: node._state is not None and node._state.header.stamp == stamp,
                         timeout=10, what="robot state")
            msg = Image(**rgb_to_image_fields(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
            msg.header.stamp = stamp
            img_pub.publish(msg)
            g.wait_until(lambda n=n: len(got) > n, timeout=30, what="a proposal")

        def stages():
            for d in list(diags):
                for st in d.status:
                    values = {kv.key: kv.value for kv in st.values}
                    if st.name == node.get_name() and values.get("predict_ms", "-") != "-":
                        return values
            return None

        g.wait_until(lambda: stages() is not None, timeout=10, what="diagnostics with stage timings")
        values = stages()
    for stage in STAGES:
        med, p95, mx = (float(x) for x in values[f"{stage}_ms"].split("/"))
        assert 0 <= med <= p95 <= mx
    assert int(values["gc_collections"]) >= 1  # the node settles its heap (one collection) after the load
