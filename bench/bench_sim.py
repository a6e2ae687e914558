"""Simulator speed: env.step with MuJoCo's default offscreen rendering vs apo_sim's fast settings, and
the lockstep round-trip rate of the simulator node over DDS.

1. ``SimEnv.step`` (one control step + one camera render) with ``fast_render=False`` (4x multisampling,
   4096 shadow map, reflections) and ``fast_render=True`` (no multisampling, 1024 shadow map, no
   reflections, context rebuilt once), measured side by side in interleaved blocks so machine load
   hits both alike; physics alone (no render) and reset time for reference. Ratio = default / fast.
2. The node (``python -m apo_sim.sim_node``, lockstep mode, its own process): the probe publishes a
   command, waits for the RobotState of the resulting observation, repeats. Reports round trips per
   second and the round-trip time next to the bare env.step time at the same image size.

On a shared 2-core machine the figures move with the load average, which is printed.

Usage: python bench/bench_sim.py [--sizes 84 128 224] [--steps 150] [--round-trips 200] [--task Lift]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("ROS_DOMAIN_ID", "10")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="apo-bench-roslog-"))
os.environ.setdefault("AMENT_PREFIX_PATH", os.environ.get("VIRTUAL_ENV", sys.prefix))
os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np

from apo_sim.env import SimEnv


def _ms(values) -> str:
    v = np.asarray(values) * 1e3
    return f"median {np.median(v):6.1f} ms  p90 {np.percentile(v, 90):6.1f} ms"


def _timed_steps(env: SimEnv, rng, n: int, render: bool = True) -> list[float]:
    out = []
    for _ in range(n):
        action = rng.uniform(-0.3, 0.3, 7)
        t0 = time.perf_counter()
        env.step(action, render=render)
        out.append(time.perf_counter() - t0)
    return out


def bench_render(task: str, sizes: list[int], steps: int, block: int = 10) -> dict[int, float]:
    print(f"== env.step ({task}, one camera, {steps} steps per setting, interleaved blocks of {block})")
    fast_medians = {}
    for size in sizes:
        default = SimEnv(task, image_size=size, seed=0, fast_render=False)
        fast = SimEnv(task, image_size=size, seed=0, fast_render=True)
        rng = np.random.default_rng(0)
        times = {"default": [], "fast": [], "physics": []}
        for env in (default, fast):
            env.reset(seed=0)
            _timed_steps(env, rng, 3)  # warm-up (first renders upload textures)
        while len(times["fast"]) < steps:
            times["default"] += _timed_steps(default, rng, block)
            times["fast"] += _timed_steps(fast, rng, block)
            times["physics"] += _timed_steps(fast, rng, block, render=False)
            if fast.steps > 120:  # keep the arm in a normal workspace
                for env in (default, fast):
                    env.reset()
        resets = []
        for _ in range(5):
            t0 = time.perf_counter()
            fast.reset()
            resets.append(time.perf_counter() - t0)
        d, f = np.median(times["default"]), np.median(times["fast"])
        fast_medians[size] = f
        print(f"{size:4d} px  default render: {_ms(times['default'])}")
        print(f"{size:4d} px  fast render:    {_ms(times['fast'])}   ratio default/fast = {d / f:.2f}x")
        print(f"{size:4d} px  physics only:   {_ms(times['physics'])}   reset (soft): {_ms(resets)}")
        default.close()
        fast.close()
    return fast_medians


def bench_lockstep(task: str, size: int, round_trips: int, step_ms: float | None) -> None:
    from apo_core import topics
    from apo_interfaces.msg import ActionCommand, RobotState
    from apo_ros.qos import topic_qos
    from apo_ros.testing import RosGraph, start_node_process, stop_process

    print(f"== lockstep node round trip ({task}, {size} px, node in its own process, "
          f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']})")
    log = tempfile.NamedTemporaryFile(prefix="apo-bench-sim-", suffix=".log", delete=False).name
    proc = start_node_process("apo_sim.sim_node", ["--ros-args", "-p", "mode:=lockstep", "-p", f"task:={task}",
                                                   "-p", f"image_size:={size}", "-p", "seed:=0"], log_path=log)
    try:
        with RosGraph() as g:
            probe = g.probe_node("bench_sim_probe")
            got = threading.Event()
            count = [0]

            def on_state(_msg):
                count[0] += 1
                got.set()

            probe.create_subscription(RobotState, topics.ROBOT_STATE, on_state, topic_qos(topics.ROBOT_STATE))
            pub = probe.create_publisher(ActionCommand, topics.COMMAND, topic_qos(topics.COMMAND))
            g.wait_for_subscribers(pub, timeout=120)
            g.wait_for_publishers(probe, topics.ROBOT_STATE, timeout=120)
            rng = np.random.default_rng(1)

            def round_trip(timeout=10.0) -> float | None:
                got.clear()
                t0 = time.perf_counter()
                pub.publish(ActionCommand(action=rng.uniform(-0.3, 0.3, 7).tolist(),
                                          source=ActionCommand.SOURCE_POLICY))
                return time.perf_counter() - t0 if got.wait(timeout) else None

            while round_trip(timeout=1.0) is None:  # until both ends have matched
                pass
            for _ in range(10):
                round_trip()
            rtts, t_start = [], time.perf_counter()
            for _ in range(round_trips):
                rtt = round_trip()
                if rtt is None:
                    print("   a round trip timed out (>10 s); stopping")
                    break
                rtts.append(rtt)
            wall = time.perf_counter() - t_start
    finally:
        rc = stop_process(proc)
    rate = len(rtts) / wall
    print(f"   {len(rtts)} round trips: {rate:.1f} steps/s, round trip {_ms(rtts)} (node exit code {rc})")
    if step_ms:
        print(f"   bare env.step at {size} px: {step_ms * 1e3:.1f} ms -> DDS + node overhead about "
              f"{(np.median(rtts) - step_ms) * 1e3:.1f} ms per step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="Lift")
    p.add_argument("--sizes", type=int, nargs="+", default=[84, 128, 224])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--round-trips", type=int, default=200)
    p.add_argument("--node-size", type=int, default=128, help="image size of the lockstep node")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    fast = bench_render(args.task, args.sizes, args.steps)
    bench_lockstep(args.task, args.node_size, args.round_trips, fast.get(args.node_size))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
