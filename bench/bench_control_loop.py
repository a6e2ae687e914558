"""Control loop latency: camera image published -> /apo/policy_action -> /apo/command, side by side with a
bare ``predict`` on the same frames in one run (issue 12; goals: image -> policy action <= 1.05 x predict,
image -> command <= 1.10 x predict).

The policy node and the arbiters run as their own processes (as in deployment). This process publishes
an image + robot state per frame (one at a time, slower than inference, so no frame is dropped on
purpose), a different random image each frame to a policy whose random weights make every action
different, so commands are matched to their frame by their values, and
timestamps what comes back. Two arbiters listen to the same policy actions at once: one in
``publish_mode: event`` on /apo/command and one in ``publish_mode: tick`` with its command topic
remapped, so both command paths are measured on the same actions.

Side by side: each frame is first run through a bare ``predict`` in this process (``--period`` s after
the previous frame's answers came back), then published to the loop ``--period`` s later. The bare predicts
and the loop
thus share the machine's load over the whole run (on a shared machine, a bare predict measured before or
after the loop sees another load); the ratios are to these interleaved bare predicts. Reported (median
and p95):

- bare predict on the same frames, back to back before the run (for reference) and interleaved with the
  loop (the ratios' reference), and where a frame's time goes inside the node (its diagnostics: arrival,
  mailbox wait, decode, predict, publish, garbage-collector pauses);
- image -> /apo/policy_action: the policy node's whole path (DDS, decoding, mailbox, inference, publish);
- image -> /apo/command, event mode: + the arbiter publishing the action when it arrives;
- image -> /apo/command, tick mode: + up to one control period waiting for the tick.

Usage: python bench/bench_control_loop.py [--frames 500] [--period 0.1] [--image-size 84] [--threads 1]
                                          [--rate 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TICK_COMMAND = "/apo/bench/command_tick"  # the tick-mode arbiter's /apo/command, remapped
NODE_STAGES = ("arrival_ms", "wait_ms", "decode_ms", "predict_ms", "publish_ms", "gc_ms", "gc_collections")  # its diagnostics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=500, help="frames measured (after 20 warm-up frames)")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rate", type=float, default=20.0, help="arbiter control rate (Hz): tick mode's period")
    ap.add_argument("--period", type=float, default=0.1, help="seconds between published images")
    args = ap.parse_args()
    if args.frames < 1 or args.period <= 0 or args.rate <= 0:
        sys.exit("--frames must be >= 1, --period and --rate > 0")
    os.environ.setdefault("ROS_DOMAIN_ID", "91")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import torch

    from apo_core.model_store import ModelStore
    from apo_core.policy import Observation, load_policy
    from apo_core.policy.small_vla import SmallVLAPolicy
    from apo_ros.testing import start_node_process, stop_process

    tmp = Path(tempfile.mkdtemp(prefix="apo-bench-loop-"))
    store = ModelStore(tmp / "models")
    untrained = SmallVLAPolicy.create(state_dim=9, image_size=args.image_size)
    # A fresh small VLA answers every frame with the same action tokens; weights shaken by noise make
    # each frame's action different, so commands are told apart by their values (predict cost unchanged).
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in untrained.model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    store.add(untrained.save(tmp / "p"))
    instruction = "lift the red cube"
    rng = np.random.default_rng(0)
    warmup = 20
    n = args.frames + warmup
    images = rng.integers(0, 255, (n, args.image_size, args.image_size, 3), dtype=np.uint8)
    proprio = rng.normal(size=9)

    torch.set_num_threads(args.threads)  # the node's thread count
    policy = load_policy(store.path())
    policy.predict(Observation(images[0], instruction, proprio))
    hot, bare = [], []
    for i in range(warmup, n):
        t0 = time.perf_counter()
        policy.predict(Observation(images[i], instruction, proprio))
        hot.append((time.perf_counter() - t0) * 1000)

    def bare_predict(i: int) -> None:  # interleaved with the loop's frames (see the module doc)
        t0 = time.perf_counter()
        policy.predict(Observation(images[i], instruction, proprio))
        if i >= warmup:
            bare.append((time.perf_counter() - t0) * 1000)

    arbiter = "apo_intervention.arbiter_node"
    # No episode runs here: policy_outside_episodes:=run lets the policy drive without one (the default
    # holds outside episodes, and the loop measured would be the watchdog's holds).
    procs = [
        start_node_process("apo_policy_node.policy_node", ["--ros-args", "-p", f"model_path:={store.root}",
                           "-p", f"num_threads:={args.threads}", "-p", f"instruction:={instruction}"],
                           log_path=str(tmp / "policy.log")),
        start_node_process(arbiter, ["--ros-args", "-p", f"control_rate_hz:={args.rate}", "-p", "publish_mode:=event",
                                     "-p", "policy_outside_episodes:=run"],
                           log_path=str(tmp / "arbiter_event.log")),  # default max_rate_hz: control_rate_hz
        start_node_process(arbiter, ["--ros-args", "-r", "__node:=apo_arbiter_tick", "-r",
                                     f"/apo/command:={TICK_COMMAND}", "-p", f"control_rate_hz:={args.rate}",
                                     "-p", "publish_mode:=tick", "-p", "policy_outside_episodes:=run"], log_path=str(tmp / "arbiter_tick.log")),
    ]
    load_before = os.getloadavg()
    try:
        loop = measure(args, images, proprio, warmup, bare_predict)
    finally:
        for p in procs:
            stop_process(p)
    report(args, hot, bare, loop, (load_before, os.getloadavg()))


def _stats(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 95))


def report(args, hot, bare, loop, loads) -> None:
    def line(name, ms, ratio_to=None):
        if not ms:
            return f"  {name:<38s} (nothing measured)"
        med, p95 = _stats(ms)
        text = f"  {name:<38s} median {med:7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})"
        if ratio_to:
            text += f"   ratio {med / ratio_to[0]:5.2f} / p95 {p95 / ratio_to[1]:5.2f}"
        return text

    ref = _stats(bare)
    (before, after), cores = loads, os.cpu_count()
    print(f"\nsmall VLA, {args.image_size}px image + 9-D state, {args.threads} torch thread(s), a frame every "
          f"{args.period:g} s + the loop's answer, with a bare predict between frames, arbiter control tick {args.rate:g} Hz; "
          f"ratios are to the interleaved bare predicts. Machine load average {before[0]:.1f} at the start, "
          f"{after[0]:.1f} at the end ({cores} cores)")
    print(line("bare predict, back to back (before)", hot))
    print(line("bare predict, interleaved with the loop", bare))
    node = loop["node_stages"]
    if node:
        print("  inside the policy node, last frames (median/p95/max ms): " +
              ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in node.items() if k.endswith("_ms")) +
              f"; {node.get('gc_collections', '?')} garbage collections")
    print(line("image -> /apo/policy_action", loop["policy"], ref))
    print(line("image -> /apo/command (event mode)", loop["event"], ref))
    print(line("image -> /apo/command (tick mode)", loop["tick"], ref))
    lost = {k: args.frames - len(loop[k]) for k in ("policy", "event", "tick")}
    print(f"\n  frames without a measurement: {lost}   (goals: policy action <= 1.05, command <= 1.10 x predict)")


@contextlib.contextmanager
def single_threaded_node(context, name: str):
    """A node spun by its own single-threaded executor. The graph's multi-threaded executor holds back a
    subscription while another callback of its (mutually exclusive) group runs, and the answers of one frame
    (policy action, two commands, diagnostics) arrive together: measured, that added stalls of hundreds of
    ms to the probe's receive times, not to the loop's."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        node.destroy_node()


def measure(args, images, proprio, warmup, bare_predict) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from apo_core import topics
    from apo_core.image_codec import rgb_to_image_fields
    from apo_interfaces.msg import ActionCommand, RobotState
    from apo_ros.qos import qos_profile, topic_qos
    from apo_ros.testing import RosGraph

    sent: dict[tuple[int, int], float] = {}
    out: dict = {"policy": [], "event": [], "tick": [], "node_stages": {}}
    answered = threading.Event()  # set by the probe's callbacks whenever a measurement comes in
    jitter = np.random.default_rng(1)
    # action values -> time its image was sent, per arbiter; popped by the first command carrying them
    awaiting: dict[str, dict[tuple, float]] = {"event": {}, "tick": {}}
    early: dict[str, dict[tuple, float]] = {"event": {}, "tick": {}}  # command seen first: its receive time

    def key(values) -> tuple:
        return tuple(np.round(np.clip(np.asarray(values, dtype=float), -1.0, 1.0), 6))

    with RosGraph() as g, single_threaded_node(g.context, "bench_loop") as node:

        def on_policy(msg):
            now = time.perf_counter()
            t_sent = sent.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if t_sent is not None:
                out["policy"].append((now - t_sent) * 1000)
                answered.set()
                k = key(msg.action)
                for mode, waiting in awaiting.items():
                    t_cmd = early[mode].pop(k, None)
                    if t_cmd is None or t_cmd < t_sent:  # (an older frame's equal action)
                        waiting[k] = t_sent
                    else:
                        out[mode].append((t_cmd - t_sent) * 1000)
                        answered.set()

        def on_command(mode):
            def cb(msg):
                now = time.perf_counter()
                k = key(msg.action)
                t_sent = awaiting[mode].pop(k, None)
                if t_sent is not None:
                    out[mode].append((now - t_sent) * 1000)
                    answered.set()
                elif msg.source == msg.SOURCE_POLICY:  # here before its policy action (another subscription)
                    early[mode].setdefault(k, now)
            return cb

        def on_diag(msg):
            for st in msg.status:
                if st.name == "apo_policy" and sent:
                    values = {kv.key: kv.value for kv in st.values}
                    out["node_stages"] = {k: values[k] for k in NODE_STAGES if k in values}

        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, qos_profile("reliable", 10))
        node.create_subscription(ActionCommand, topics.POLICY_ACTION, on_policy, topic_qos(topics.POLICY_ACTION))
        node.create_subscription(ActionCommand, topics.COMMAND, on_command("event"), topic_qos(topics.COMMAND))
        node.create_subscription(ActionCommand, TICK_COMMAND, on_command("tick"), topic_qos(topics.COMMAND))
        img_pub = node.create_publisher(Image, topics.IMAGE, topic_qos(topics.IMAGE))
        st_pub = node.create_publisher(RobotState, topics.ROBOT_STATE, topic_qos(topics.ROBOT_STATE))
        g.wait_for_subscribers(img_pub, timeout=120)
        g.wait_for_subscribers(st_pub, timeout=120)
        g.wait_until(lambda: node.count_publishers(topics.COMMAND) > 0 and node.count_publishers(TICK_COMMAND) > 0,
                     timeout=120, what="both arbiters")
        for i in range(len(images)):
            bare_predict(i)
            # a random phase against the tick-mode arbiter's timer (pacing by the answers would lock it)
            time.sleep(args.period + jitter.uniform(0.0, 1.0 / args.rate))
            # messages built before the stamp (rclpy checks every byte of an Image's data in Python: ms), so
            # the node's 'arrival' stage is the transport's
            st = RobotState(proprio=[float(x) for x in proprio])
            msg = Image(**rgb_to_image_fields(images[i]))
            stamp = node.get_clock().now().to_msg()
            st.header.stamp = msg.header.stamp = stamp
            st_pub.publish(st)
            counts = {k: len(out[k]) for k in ("policy", "event", "tick")}
            if i >= warmup:
                sent[(stamp.sec, stamp.nanosec)] = time.perf_counter()
            img_pub.publish(msg)
            # This frame's answers come in before the next bare predict runs in this process (it would
            # hold the GIL the probe's callbacks need); a frame without one waits at most a second.
            # (woken by the callbacks, not by polling: a polling loop here would compete with the node for CPU)
            deadline = time.monotonic() + 1.0
            while i >= warmup and any(len(out[k]) == n for k, n in counts.items()):
                answered.clear()
                if all(len(out[k]) > n for k, n in counts.items()) or not answered.wait(deadline - time.monotonic()):
                    break
            time.sleep(args.period)
        time.sleep(1.0)
        assert rclpy.ok(context=g.context)
    if not out["policy"]:
        sys.exit("no policy action came back; see the node logs")
    return out


if __name__ == "__main__":
    main()
