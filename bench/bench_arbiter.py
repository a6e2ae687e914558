"""Arbiter over DDS: added latency (policy action published -> command received) and max control rate.

The arbiter runs as its own process (``python -m apo_intervention.arbiter_node``), the probe in this
one. Latency: the probe publishes uniquely marked policy actions at jittered intervals and times the
first COMMAND carrying each mark; measured side by side with the bare DDS hop (probe -> probe over
DDS) so the arbiter's share is visible. Being timer-driven, the arbiter adds on average half a control
period of waiting on top of two DDS hops. Rate: with an episode active and the policy streaming, the
arbiter is asked for increasing control rates; a rate is sustained when the arbiter's own tick rate
(from its diagnostics) reaches >= 95 % of it, and delivered when this Python probe also receives
>= 95 % of COMMAND and STEP with contiguous step indices. The arbiter process's CPU use is read from
/proc. On a shared 2-core machine the figures move with the load average, which is printed.

Usage: python bench/bench_arbiter.py [--samples 300] [--rates 20 50 100] [--max-rates 100 200 400 800 1600]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("ROS_DOMAIN_ID", "77")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="apo-bench-roslog-"))
os.environ.setdefault("AMENT_PREFIX_PATH", os.environ.get("VIRTUAL_ENV", sys.prefix))

import numpy as np

from apo_core import topics
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph, start_node_process, stop_process


def _pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    def __init__(self, g: RosGraph):
        from apo_interfaces.msg import ActionCommand, LabelledStep
        from apo_interfaces.srv import EpisodeControl

        self.g = g
        self.node = g.probe_node("bench_arbiter_probe")
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.commands = 0
        self.steps: list[int] = []
        self.policy = self.node.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        self.node.create_subscription(ActionCommand, topics.COMMAND, self._on_command, topic_qos(topics.COMMAND))
        self.node.create_subscription(LabelledStep, topics.STEP, self._on_step, topic_qos(topics.STEP))
        self.episode = self.node.create_client(EpisodeControl, topics.EPISODE_CONTROL)
        # the arbiter's own tick count, from its diagnostics: its rate whether or not this probe keeps up
        from diagnostic_msgs.msg import DiagnosticArray

        self.ticks: list[tuple[float, int]] = []
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, topic_qos(topics.COMMAND))
        # bare DDS hop: same message type, a private topic, this process to itself
        self.hop_pub = self.node.create_publisher(ActionCommand, "/apo/bench/hop", topic_qos(topics.COMMAND))
        self.hop: list[float] = []
        self.node.create_subscription(ActionCommand, "/apo/bench/hop", self._on_hop, topic_qos(topics.COMMAND))

    def _mark(self, msg) -> int | None:
        if msg.source != msg.SOURCE_POLICY or len(msg.action) != 7:
            return None
        return int(round(msg.action[0] * 1e4))

    def _on_command(self, msg) -> None:
        now = time.perf_counter()
        with self.lock:
            self.commands += 1
            mark = self._mark(msg)
            if mark in self.sent and mark not in self.latency:
                self.latency[mark] = now - self.sent[mark]

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "ticks" in values:
                with self.lock:
                    self.ticks.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, int(values["ticks"])))

    def tick_rate(self, since: float) -> float:
        with self.lock:
            pts = [(t, n) for t, n in self.ticks if t >= since]
        if len(pts) < 2:
            return float("nan")
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    def _on_step(self, msg) -> None:
        with self.lock:
            self.steps.append(msg.step_index)

    def _on_hop(self, msg) -> None:
        now = time.perf_counter()
        with self.lock:
            self.hop.append(now - msg.action[1])

    def publish_policy(self, mark: int) -> None:
        from apo_interfaces.msg import ActionCommand

        msg = ActionCommand(action=[mark * 1e-4, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0], policy_version="bench")
        with self.lock:
            self.sent[mark] = time.perf_counter()
        self.policy.publish(msg)

    def start_episode(self) -> None:
        from apo_interfaces.srv import EpisodeControl

        res = self.g.call(self.episode, EpisodeControl.Request(command=EpisodeControl.Request.START), timeout=20)
        assert res.success, res.message


def start_arbiter(rate: float, log_dir: str):
    args = ["--ros-args", "-p", f"control_rate_hz:={float(rate)}", "-p", "max_episode_steps:=0",
            "-p", "policy.timeout:=5.0", "-p", "diagnostics_period:=0.5", "--log-level", "warn",
            "-p", "policy_outside_episodes:=run"]  # the latency part runs before any episode starts
    return start_node_process("apo_intervention.arbiter_node", args, log_path=os.path.join(log_dir, f"arb{rate}.log"))


def wait_ready(g: RosGraph, probe: Probe) -> None:
    g.wait_for_subscribers(probe.policy, timeout=30)
    g.wait_for_publishers(probe.node, topics.COMMAND, timeout=30)
    g.wait_for_publishers(probe.node, topics.STEP, timeout=30)


def measure_latency(g: RosGraph, rate: float, samples: int, log_dir: str) -> dict:
    probe = Probe(g)
    proc = start_arbiter(rate, log_dir)
    try:
        wait_ready(g, probe)
        g.wait_for_subscribers(probe.hop_pub)
        period = 1.0 / rate
        rng = random.Random(0)
        for mark in range(1, samples + 1):
            probe.publish_policy(mark)
            # not phase-locked to the ticks, and slower than them so every mark gets executed
            time.sleep(period * rng.uniform(1.3, 2.3))
        time.sleep(0.5)
        from apo_interfaces.msg import ActionCommand

        for _ in range(samples):
            probe.hop_pub.publish(ActionCommand(action=[0.0, time.perf_counter()]))
            time.sleep(0.005)
        time.sleep(0.3)
        with probe.lock:
            lat = [v * 1e3 for v in probe.latency.values()]
            hop = [v * 1e3 for v in probe.hop]
        return {"rate": rate, "n": len(lat), "sent": samples, "median": statistics.median(lat), "p90": _pct(lat, 90),
                "p99": _pct(lat, 99), "hop_median": statistics.median(hop), "hop_p90": _pct(hop, 90)}
    finally:
        stop_process(proc)
        g.executor.remove_node(probe.node)
        g.nodes.remove(probe.node)
        probe.node.destroy_node()


def measure_rate(g: RosGraph, rate: float, duration: float, log_dir: str) -> dict:
    probe = Probe(g)
    proc = start_arbiter(rate, log_dir)
    try:
        wait_ready(g, probe)
        stop = threading.Event()

        def stream():  # the policy at the control rate
            mark = 0
            while not stop.is_set():
                mark += 1
                probe.publish_policy(mark % 9000)
                time.sleep(1.0 / rate)

        t = threading.Thread(target=stream, daemon=True)
        t.start()
        probe.start_episode()
        time.sleep(0.5)  # settle
        with probe.lock:
            c0, s0 = probe.commands, len(probe.steps)
        cpu0, t0, wall0 = _cpu_seconds(proc.pid), time.perf_counter(), time.time()
        time.sleep(duration)
        with probe.lock:
            c1, s1 = probe.commands, len(probe.steps)
            steps = list(probe.steps)
        cpu1, t1 = _cpu_seconds(proc.pid), time.perf_counter()
        stop.set()
        t.join()
        elapsed = t1 - t0
        gaps = sum(1 for a, b in zip(steps, steps[1:], strict=False) if b != a + 1)
        return {"rate": rate, "cmd_hz": (c1 - c0) / elapsed, "step_hz": (s1 - s0) / elapsed,
                "tick_hz": probe.tick_rate(wall0),
                "cpu": 100.0 * (cpu1 - cpu0) / elapsed, "step_gaps": gaps}
    finally:
        stop_process(proc)
        g.executor.remove_node(probe.node)
        g.nodes.remove(probe.node)
        probe.node.destroy_node()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0, 100.0])
    ap.add_argument("--max-rates", type=float, nargs="+", default=[100.0, 200.0, 400.0, 800.0, 1600.0])
    ap.add_argument("--duration", type=float, default=4.0)
    args = ap.parse_args()
    log_dir = tempfile.mkdtemp(prefix="apo-bench-arbiter-")
    print(f"arbiter bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
          f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}, arbiter logs in {log_dir}")
    with RosGraph(num_threads=2) as g:
        print("\nlatency: policy action published -> COMMAND received (arbiter in its own process)")
        print(f"{'rate Hz':>8} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'half period':>12} "
              f"{'DDS hop med':>12} {'hop p90':>8}")
        for rate in args.rates:
            r = measure_latency(g, rate, args.samples, log_dir)
            print(f"{r['rate']:8.0f} {r['n']:5d} {r['median']:10.2f} {r['p90']:8.2f} {r['p99']:8.2f} "
                  f"{500.0 / rate:12.2f} {r['hop_median']:12.3f} {r['hop_p90']:8.3f}")
        print("\nmax control rate (episode active, policy streaming at the same rate)")
        print("(tick Hz: the arbiter's own rate from its diagnostics; COMMAND/STEP Hz: what this probe received;\n"
              " step gaps: STEP indices this probe missed -- a probe that cannot keep up shows here)")
        print(f"{'asked Hz':>9} {'tick Hz':>8} {'COMMAND Hz':>11} {'STEP Hz':>8} {'arbiter CPU %':>14} "
              f"{'step gaps':>10} {'sustained':>9} {'delivered':>9}")
        best = best_delivered = 0.0
        for rate in args.max_rates:
            r = measure_rate(g, rate, args.duration, log_dir)
            ok = r["tick_hz"] >= 0.95 * rate
            delivered = ok and r["cmd_hz"] >= 0.95 * rate and r["step_hz"] >= 0.95 * rate and r["step_gaps"] == 0
            best = rate if ok else best
            best_delivered = rate if delivered else best_delivered
            print(f"{rate:9.0f} {r['tick_hz']:8.1f} {r['cmd_hz']:11.1f} {r['step_hz']:8.1f} {r['cpu']:14.1f} "
                  f"{r['step_gaps']:10d} {'yes' if ok else 'no':>9} {'yes' if delivered else 'no':>9}")
        print(f"\nmax sustained control rate among those tried: {best:.0f} Hz (arbiter ticks), "
              f"{best_delivered:.0f} Hz (also fully received by a Python probe); load average now "
              f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
