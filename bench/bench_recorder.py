"""Benchmark of apo_recorder: the real node over DDS, and its writer against the bare rosbags writer.

Live part: the recorder runs as its own process (``python -m apo_recorder.recorder_node``); this
process publishes 224x224 rgb8 images at 30 Hz plus robot state, policy action, command and
labelled step at 10-20 Hz, split into episodes (START ... SUCCESS, the next START right after),
for ``--duration`` seconds (default 120). Figures: messages published vs recorded per topic, the
recorder's own drop counter (from /diagnostics), the recorder process's CPU share, write MB/s.

Offline part, side by side in this run: the same messages (same types and sizes) written by the
bare ``rosbags`` Writer and by ``EpisodeBagWriter`` (thread + queue + chunk close/flush every 0.5 s,
fsync on a helper thread); ratios of their throughputs at the same durability (target >= 0.8): both
without fsync, and both fsyncing (the bare writer once after close). The default writer against the
bare writer without any fsync is printed as well: that one compares disk speed with page-cache speed.

    source scripts/env.sh
    python bench/bench_recorder.py                 # 2 minutes
    python bench/bench_recorder.py --duration 20   # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ROS_DOMAIN_ID", "57")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="apo-bench-roslog-"))
os.environ.setdefault("AMENT_PREFIX_PATH", os.environ.get("VIRTUAL_ENV", ""))

from apo_core import topics as T
from apo_recorder import EpisodeBagWriter, TopicSpec, contract, list_episode_bags, read_bag_info
from apo_recorder.msgdefs import message_definition
from apo_recorder.synthetic import SyntheticMessages

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """user+system CPU of every process in a process group (the recorder and any re-exec'd child)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def live(args, workdir: Path) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray

    from apo_recorder.testing import EpisodeProbe
    from apo_ros.testing import RosGraph, start_node_process, stop_process

    out = workdir / "bags"
    log = workdir / "recorder.log"
    proc = start_node_process("apo_recorder.recorder_node",
                              ["--ros-args", "-p", f"output_dir:={out}", "-p", "grace_period_s:=1.0"],
                              log_path=str(log))
    published = dict.fromkeys([T.IMAGE, T.ROBOT_STATE, T.POLICY_ACTION, T.COMMAND, T.STEP, T.EPISODE], 0)
    diag: dict[str, str] = {}
    try:
        with RosGraph() as g:
            probe = EpisodeProbe(g, "bench_publisher", image_size=(args.size, args.size))

            def on_diag(msg):
                for s in msg.status:
                    if s.name.startswith("apo_recorder"):
                        diag.update({kv.key: kv.value for kv in s.values})

            probe.node.create_subscription(DiagnosticArray, T.DIAGNOSTICS, on_diag, 10)
            probe.wait_for_recorder(timeout=60)
            time.sleep(1.0)  # let the recorder finish starting up
            img, state = probe.image, probe.RobotState(proprio=[0.1] * 9)
            action = probe.ActionCommand(action=[0.1] * 7, source=0)
            cpu0, t0 = group_cpu_seconds(proc.pid), time.monotonic()
            image_dt, step_dt = 1.0 / args.image_hz, 1.0 / args.step_hz
            next_image, next_step, step_index, episode = t0, t0, 0, -1
            episode_end = t0
            while True:
                now = time.monotonic()
                if now >= t0 + args.duration:
                    break
                if now >= episode_end:
                    if episode >= 0:
                        probe.end(f"bench_{episode:03d}")
                        published[T.EPISODE] += 1
                    episode += 1
                    step_index = 0
                    probe.start(f"bench_{episode:03d}", instruction="lift the red cube", task="Lift")
                    published[T.EPISODE] += 1
                    episode_end = now + args.episode_s
                if now >= next_image:
                    probe.pubs[T.IMAGE].publish(probe._stamp(img))
                    published[T.IMAGE] += 1
                    next_image += image_dt
                if now >= next_step:
                    probe.pubs[T.ROBOT_STATE].publish(probe._stamp(state))
                    probe.pubs[T.POLICY_ACTION].publish(probe._stamp(action))
                    probe.pubs[T.COMMAND].publish(probe._stamp(action))
                    probe.step(f"bench_{episode:03d}", step_index, with_observation=False)
                    for topic in (T.ROBOT_STATE, T.POLICY_ACTION, T.COMMAND, T.STEP):
                        published[topic] += 1
                    step_index += 1
                    next_step += step_dt
                time.sleep(max(0.0, min(next_image, next_step) - time.monotonic()))
            probe.end(f"bench_{episode:03d}")
            published[T.EPISODE] += 1
            wall = time.monotonic() - t0
            cpu = group_cpu_seconds(proc.pid) - cpu0
            n_episodes = episode + 1
            g.wait_until(lambda: len(list_episode_bags(out)) == n_episodes, 60, what="last bag closed")
            time.sleep(1.5)  # one more diagnostics period
    finally:
        stop_process(proc, signal.SIGINT, timeout=30)

    recorded = dict.fromkeys(published, 0)
    total_bytes = 0
    for bag in list_episode_bags(out):
        info = read_bag_info(bag)
        for topic, ti in info.topics.items():
            if topic in recorded:
                recorded[topic] += ti.message_count
        total_bytes += sum(f.stat().st_size for f in bag.iterdir())
    return {"published": published, "recorded": recorded, "wall": wall, "cpu": cpu, "bytes": total_bytes,
            "episodes": n_episodes, "diag": diag}


def offline_messages(args, seconds: float):
    syn = SyntheticMessages()
    img = syn.image(args.size, args.size)
    state, action = syn.robot_state([0.1] * 9), syn.action([0.1] * 7)
    msgs = []
    n_img, n_step = int(seconds * args.image_hz), int(seconds * args.step_hz)
    t = 1_700_000_000_000_000_000
    for i in range(n_img):
        msgs.append((T.IMAGE, t + int(i * 1e9 / args.image_hz), img))
    for i in range(n_step):
        ts = t + int(i * 1e9 / args.step_hz)
        msgs += [(T.ROBOT_STATE, ts, state), (T.POLICY_ACTION, ts + 1, action), (T.COMMAND, ts + 2, action),
                 (T.STEP, ts + 3, syn.step("offline", i))]
    msgs.sort(key=lambda m: m[1])
    return msgs


def bare_rosbags(path: Path, msgs, fsync_at_close: bool = False) -> float:
    """The rosbags Writer alone on this thread; optionally fsync the files once after close."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    t0 = time.perf_counter()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for topic, msgtype in contract.DEFAULT_TOPICS.items():
            msgdef, digest = message_definition(msgtype)
            conns[topic] = w.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
        for topic, ts, data in msgs:
            w.write(conns[topic], ts, data)
    if fsync_at_close:
        for f in [*path.iterdir(), path]:
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return time.perf_counter() - t0


def episode_writer(path: Path, msgs, fsync: bool) -> float:
    specs = [TopicSpec(t, m) for t, m in contract.DEFAULT_TOPICS.items()]
    t0 = time.perf_counter()
    w = EpisodeBagWriter(path, specs, contract.default_custom_data("offline"), fsync=fsync,
                         max_queue_messages=len(msgs) + 1, max_queue_bytes=1 << 40).start()
    for topic, ts, data in msgs:
        w.write(topic, ts, data)
    stats = w.close()
    assert stats.messages_written == len(msgs) and stats.error is None, stats
    return time.perf_counter() - t0


def offline(args, workdir: Path) -> dict:
    msgs = offline_messages(args, args.offline_s)
    nbytes = sum(len(m[2]) for m in msgs)
    for msgtype in contract.DEFAULT_TOPICS.values():
        message_definition(msgtype)  # warm the definition cache for both
    times = {"bare": [], "ours_nofsync": [], "bare_fsync": [], "ours": []}
    for rep in range(args.repeats):
        for name in times:
            path = workdir / f"offline_{name}_{rep}"
            if name.startswith("bare"):
                times[name].append(bare_rosbags(path, msgs, fsync_at_close=(name == "bare_fsync")))
            else:
                times[name].append(episode_writer(path, msgs, fsync=(name == "ours")))
            shutil.rmtree(path)
    return {"messages": len(msgs), "bytes": nbytes, "times": {k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of live publishing (default 120)")
    ap.add_argument("--episode-s", type=float, default=30.0, help="episode length in seconds")
    ap.add_argument("--image-hz", type=float, default=30.0)
    ap.add_argument("--step-hz", type=float, default=15.0)
    ap.add_argument("--size", type=int, default=224, help="image height and width (rgb8)")
    ap.add_argument("--offline-s", type=float, default=30.0, help="seconds of data for the offline comparison")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-live", action="store_true")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="apo-bench-recorder-"))
    try:
        print(f"apo_recorder benchmark: {args.size}x{args.size} rgb8 at {args.image_hz:g} Hz, state/actions/steps "
              f"at {args.step_hz:g} Hz, {os.cpu_count()} CPU(s)")
        if not args.skip_live:
            r = live(args, workdir)
            print(f"\nLIVE (real node over DDS, {r['wall']:.1f} s, {r['episodes']} episodes)")
            print(f"  {'topic':28s} {'published':>9s} {'received':>9s} {'recorded':>9s} {'missing':>8s}")
            for topic, n in r["published"].items():
                got = r["diag"].get(f"received {topic}", "?")
                print(f"  {topic:28s} {n:9d} {got:>9s} {r['recorded'][topic]:9d} {n - r['recorded'][topic]:8d}")
            dropped = r["diag"].get("messages_dropped", "?")
            print(f"  recorder queue drops (diagnostics): {dropped}   (target 0); rejected after close/error: "
                  f"{r['diag'].get('messages_rejected', '?')}, not recorded (outside episodes): "
                  f"{r['diag'].get('messages_not_recorded', '?')}, late steps: {r['diag'].get('late_steps', '?')}")
            print("  (received = counted by the recorder's callbacks; images are best effort: published but not "
                  "received = lost in transport)")
            print(f"  recorder CPU: {100 * r['cpu'] / r['wall']:.1f} % of one core "
                  f"({100 * r['cpu'] / r['wall'] / (os.cpu_count() or 1):.1f} % of the machine)")
            print(f"  written: {r['bytes'] / 1e6:.1f} MB, {r['bytes'] / 1e6 / r['wall']:.2f} MB/s "
                  f"(input rate {args.image_hz * (args.size * args.size * 3) / 1e6:.2f} MB/s of images)")
        o = offline(args, workdir)
        mb = o["bytes"] / 1e6
        print(f"\nOFFLINE (same messages: {o['messages']} messages, {mb:.1f} MB; median of {args.repeats})")
        for name, label in (("bare", "bare rosbags Writer"), ("ours_nofsync", "EpisodeBagWriter, fsync=False"),
                            ("bare_fsync", "bare rosbags Writer + fsync"), ("ours", "EpisodeBagWriter (default)")):
            t = o["times"][name]
            print(f"  {label:32s} {t:7.3f} s  {mb / t:8.1f} MB/s  {o['messages'] / t:9.0f} msg/s")
        tm = o["times"]
        print(f"  ratio EpisodeBagWriter / bare rosbags, same durability (target >= 0.8): "
              f"{tm['bare'] / tm['ours_nofsync']:.2f} without fsync, {tm['bare_fsync'] / tm['ours']:.2f} with fsync "
              f"(bare: once at close; ours: every 0.5 s and at close)")
        print(f"  default EpisodeBagWriter (periodic fsync) vs bare rosbags without any fsync: "
              f"{tm['bare'] / tm['ours']:.2f} -- this one is page cache vs disk speed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
