"""Soak test of the deploy loop: the simulated arm, the policy node (a tiny untrained small VLA), the
arbiter, the scripted operator (through the joystick path) and the recorder, for ``--minutes`` (issue 12).

The graph is the one ``apo deploy`` starts (``config/deploy.yaml``, each node its own process, through
``apo_bringup.runner.GraphRunner``), with ``robot:=sim operator:=scripted record:=true retrain:=false``.
A probe node in this process counts what flows. Every ``--report-every`` seconds (default 60) it prints:

- RSS of every node process (psutil, else /proc/<pid>/status VmRSS);
- command rate on /apo/command (and how many were holds), policy actions, camera frames, steps;
- frames the policy node did not answer (newest-frame semantics drops frames by design when inference
  is slower than the camera) and steps lost (gaps in step_index seen by the probe, and messages the
  recorder reports dropped or late);
- bags completed and their size on disk.

At the end, a verdict against the goals: every node's RSS grows < 10 % from the first report after the
warm-up (``--warmup-minutes``, default 1) to the last, and 0 steps lost: no step_index gap, no recorder
drop, and every step of every finished episode is in its bag (metadata message counts; an incomplete bag
is named with the step indices it lacks). Episodes that end after the graph began to stop are shown but not
judged: the runner stops the recorder first, which closes the running bag while the arbiter still steps.

Usage: python bench/bench_soak.py [--minutes 30] [--warmup-minutes 1] [--control-rate 10] [--image-size 84]
                                  [--task Lift] [--out DIR] [--report-every 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

RSS_GROWTH_GOAL = 0.10


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (None once it is gone)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Probe:
    """Counts commands, steps (with step_index gaps per episode), frames, actions, episode ends, and keeps
    the newest diagnostics key/values per status name. Callbacks run on the graph's executor thread."""

    def __init__(self, graph):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from apo_core import topics
        from apo_interfaces.msg import ActionCommand, EpisodeEvent, LabelledStep
        from apo_ros.qos import qos_profile, topic_qos

        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.steps_per_episode: dict[str, int] = defaultdict(int)
        self.indices: dict[str, set[int]] = defaultdict(set)  # step indices seen, to name the missing ones
        self.last_index: dict[str, int] = {}
        self.end_at: dict[str, float] = {}  # monotonic time the probe saw each episode's END
        self.step_gaps = 0
        self.ended: set[str] = set()
        self.diag: dict[str, dict[str, str]] = {}
        node = self.node = graph.probe_node("apo_soak_probe")
        node.create_subscription(ActionCommand, topics.COMMAND, self._on_command, topic_qos(topics.COMMAND, depth=1000))
        node.create_subscription(LabelledStep, topics.STEP, self._on_step, topic_qos(topics.STEP, depth=1000))
        node.create_subscription(ActionCommand, topics.POLICY_ACTION, self._count("policy_actions"),
                                 topic_qos(topics.POLICY_ACTION, depth=1000))
        node.create_subscription(Image, topics.IMAGE, self._count("frames"), topic_qos(topics.IMAGE))
        node.create_subscription(EpisodeEvent, topics.EPISODE, self._on_event, topic_qos(topics.EPISODE))
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, qos_profile("reliable", 50))
        self._end_events = {EpisodeEvent.EVENT_END}

    def _count(self, name):
        def cb(_msg):
            with self.lock:
                self.counts[name] += 1
        return cb

    def _on_command(self, msg):
        with self.lock:
            self.counts["commands"] += 1
            if msg.source == msg.SOURCE_HOLD:
                self.counts["hold_commands"] += 1

    def _on_step(self, msg):
        with self.lock:
            self.counts["steps"] += 1
            ep = msg.episode_id
            self.steps_per_episode[ep] += 1
            self.indices[ep].add(msg.step_index)
            expected = self.last_index.get(ep, -1) + 1
            if msg.step_index != expected:
                self.step_gaps += abs(msg.step_index - expected)
            self.last_index[ep] = msg.step_index

    def _on_event(self, msg):
        with self.lock:
            if msg.event in self._end_events:
                self.ended.add(msg.episode_id)
                self.end_at[msg.episode_id] = time.monotonic()
                self.counts["episodes"] += 1

    def _on_diag(self, msg):
        with self.lock:
            for st in msg.status:
                self.diag[st.name] = {kv.key: kv.value for kv in st.values}

    def snapshot(self) -> dict:
        with self.lock:
            return {"counts": dict(self.counts), "gaps": self.step_gaps, "diag": {k: dict(v) for k, v in self.diag.items()},
                    "ended": set(self.ended), "steps_per_episode": dict(self.steps_per_episode),
                    "indices": {k: set(v) for k, v in self.indices.items()}, "end_at": dict(self.end_at)}


def recorder_values(diag: dict) -> dict[str, str]:
    return next((v for name, v in diag.items() if name.startswith("apo_recorder")), {})


def frames_without_action(diag: dict) -> str:
    """Camera frames the policy node received but answered with no action (stale frames replaced by a newer
    one, no state, ...), from the node's own counters on /diagnostics. The probe's own frame count cannot
    say this: it subscribes best effort and misses frames the policy node gets."""
    policy = next((v for name, v in diag.items() if name.startswith("apo_policy")), {})
    try:
        received, published = int(policy["frames_received"]), int(policy["published"])
    except (KeyError, ValueError):
        return "?"
    return f"{received - published} of {received} (stale {policy.get('frames_dropped_stale', '?')})"


def bags_summary(bags_dir: Path) -> tuple[int, int, dict[str, int]]:
    """(bags, bytes on disk, steps recorded per finished episode id from each bag's metadata)."""
    from apo_core import topics
    from apo_core.bag_contract import KEY_EPISODE_ID
    from apo_core.bags.layout import bag_bytes, find_bags, load_metadata, strings_of

    bags = find_bags(bags_dir) if bags_dir.exists() else []
    size, steps = 0, {}
    for bag in bags:
        size += bag_bytes(bag)
        info = load_metadata(bag)
        if info is None:  # still being written
            continue
        count = sum(int(e.get("message_count", 0)) for e in info.get("topics_with_message_count") or []
                    if e.get("topic_metadata", {}).get("name") == topics.STEP)
        steps[strings_of(info.get("custom_data")).get(KEY_EPISODE_ID, bag.name)] = count
    return len(bags), size, steps


def read_custom_data(bag: Path) -> dict[str, str]:
    from apo_core.bags.layout import read_custom_data as read

    return read(bag)


def episode_bags(bags_dir: Path) -> dict[str, Path]:
    """Finished bags (with metadata.yaml) by the episode id in their custom_data."""
    from apo_core.bag_contract import KEY_EPISODE_ID
    from apo_core.bags.layout import find_bags, load_metadata, strings_of

    found = {}
    for bag in find_bags(bags_dir) if bags_dir.exists() else []:
        info = load_metadata(bag)
        if info is not None:
            found[strings_of(info.get("custom_data")).get(KEY_EPISODE_ID, bag.name)] = bag
    return found


def bag_step_indices(bag: Path) -> list[int]:
    """step_index of every LabelledStep in the bag, in log-time order."""
    from apo_core import topics
    from apo_recorder.reader import iter_messages

    return [m.msg.step_index for m in iter_messages(bag, [topics.STEP])]


def describe_missing(seen: set[int], in_bag: list[int]) -> str:
    """Which step indices the probe saw that the bag lacks, and where they sit in the episode."""
    missing = sorted(seen - set(in_bag))
    if not missing:
        return "none (the bag has duplicates?)" if len(in_bag) != len(set(in_bag)) else "none"
    last = max(seen)
    where = ("the last steps" if missing[-1] == last and missing == list(range(missing[0], last + 1))
             else "the first steps" if missing[0] == 0 and missing == list(range(0, missing[-1] + 1))
             else "in the middle")
    shown = ", ".join(map(str, missing[:12])) + (", ..." if len(missing) > 12 else "")
    return f"{shown} ({where}; the episode has steps 0..{last})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=1.0)
    ap.add_argument("--report-every", type=float, default=60.0, help="seconds between reports")
    ap.add_argument("--control-rate", type=float, default=10.0)
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--task", default="Lift")
    ap.add_argument("--out", default="", help="logs and bags go here (default: a new temporary directory)")
    args = ap.parse_args()
    if args.minutes <= args.warmup_minutes:
        sys.exit(f"--minutes ({args.minutes}) must be longer than --warmup-minutes ({args.warmup_minutes})")
    if args.report_every <= 0:
        sys.exit("--report-every must be > 0")
    os.environ.setdefault("ROS_DOMAIN_ID", "92")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("MUJOCO_GL", "osmesa")

    from apo_bringup.graph import default_graph_path, load_graph_file, parse_launch_arguments, resolve_graph
    from apo_bringup.runner import GraphRunner
    from apo_core.model_store import ModelStore
    from apo_core.policy.small_vla import SmallVLAPolicy
    from apo_ros.testing import RosGraph

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="apo-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    store = ModelStore(out / "models")
    if not (out / "models" / "current").exists():
        store.add(SmallVLAPolicy.create(state_dim=9, image_size=args.image_size).save(out / "policy"))
    bags_dir = out / "bags"
    launch = ["robot:=sim", f"task:={args.task}", f"model_path:={store.root}", "record:=true",
              f"bags_dir:={bags_dir}", "operator:=scripted", "retrain:=false",
              f"control_rate_hz:={args.control_rate}", f"image_size:={args.image_size}"]
    specs = resolve_graph(load_graph_file(default_graph_path()), parse_launch_arguments(launch))
    print(f"[soak] {args.minutes:g} min of: {', '.join(s.name for s in specs)}; logs and bags in {out}", flush=True)

    runner = GraphRunner(specs, log_dir=out / "logs", echo=False)
    samples: list[tuple[float, dict[str, int | None]]] = []  # (minutes since start, RSS per node)
    verdict_ok = False
    with RosGraph() as graph:
        probe = Probe(graph)
        runner.start()
        pids = {n.spec.name: n.proc.pid for n in runner.running}
        t0 = time.monotonic()
        prev, prev_t = probe.snapshot(), t0
        end = t0 + args.minutes * 60
        why = ""
        while True:
            why = runner.wait(duration=min(args.report_every, max(0.0, end - time.monotonic())))
            now = time.monotonic()
            snap = probe.snapshot()
            rss = {name: rss_bytes(pid) for name, pid in pids.items()}
            samples.append(((now - t0) / 60, rss))
            report(now - t0, now - prev_t, prev, snap, rss, bags_dir)
            prev, prev_t = snap, now
            if why.startswith("required node") or now >= end:
                break
        stop_at = time.monotonic()
        runner.stop()
        time.sleep(1.0)  # the recorder's last bag closed by its shutdown
        final = probe.snapshot()
    verdict_ok = verdict(args, samples, final, bags_dir, why, stop_at)
    print(f"[soak] logs and bags in {out}")
    raise SystemExit(0 if verdict_ok else 1)


def report(elapsed: float, dt: float, prev: dict, snap: dict, rss: dict, bags_dir: Path) -> None:
    def rate(name):
        return (snap["counts"].get(name, 0) - prev["counts"].get(name, 0)) / max(dt, 1e-9)

    c = snap["counts"]
    rec = recorder_values(snap["diag"])
    n_bags, size, _ = bags_summary(bags_dir)
    mem = "  ".join(f"{name} {v / 2**20:.0f} MB" if v else f"{name} gone" for name, v in rss.items())
    unanswered = frames_without_action(snap["diag"])
    print(f"[soak] {elapsed / 60:5.1f} min | RSS {mem}", flush=True)
    print(f"[soak]           | commands {rate('commands'):5.1f}/s ({rate('hold_commands'):4.1f}/s hold), policy actions "
          f"{rate('policy_actions'):5.1f}/s, frames {rate('frames'):5.1f}/s, steps {rate('steps'):5.1f}/s | "
          f"frames without an action {unanswered}, step gaps {snap['gaps']}, recorder "
          f"dropped {rec.get('messages_dropped', '?')} late steps {rec.get('late_steps', '?')} | episodes "
          f"{c.get('episodes', 0)}, bags {n_bags} ({size / 2**20:.1f} MB)", flush=True)


def verdict(args, samples, final, bags_dir: Path, why: str, stop_at: float) -> bool:
    ok = True
    print("\n[soak] verdict")
    if why.startswith("required node"):
        print(f"  FAIL: {why}")
        ok = False
    after = [(t, r) for t, r in samples if t >= args.warmup_minutes]
    if len(after) < 2:
        print(f"  RSS: too few reports after the {args.warmup_minutes:g}-minute warm-up to judge growth")
        ok = False
    else:
        (t_a, first), (t_b, last) = after[0], after[-1]
        for name in first:
            a, b = first[name], last[name]
            if not a or not b:
                print(f"  FAIL: {name}: process gone")
                ok = False
                continue
            growth = (b - a) / a
            mark = "ok  " if growth < RSS_GROWTH_GOAL else "FAIL"
            ok &= growth < RSS_GROWTH_GOAL
            print(f"  {mark} RSS {name:<24s} {a / 2**20:7.1f} MB at {t_a:4.1f} min -> {b / 2**20:7.1f} MB at "
                  f"{t_b:4.1f} min: {growth * 100:+5.1f} % (goal < {RSS_GROWTH_GOAL * 100:.0f} %)")
    rec = recorder_values(final["diag"])
    dropped = sum(int(rec.get(key, 0) or 0) for key in ("messages_dropped", "messages_rejected", "late_steps"))
    _, size, in_bags = bags_summary(bags_dir)
    paths = episode_bags(bags_dir)
    # The runner stops the recorder first: it closes the running episode's bag (outcome unknown) while the
    # arbiter still executes steps. An episode that ends in those seconds is not a finished recording;
    # it is shown, not judged.
    judged = sorted(ep for ep in final["ended"] if final["end_at"][ep] < stop_at)
    during_stop = sorted(set(final["ended"]) - set(judged))
    missing = 0
    for ep in judged + during_stop:
        seen = final["steps_per_episode"].get(ep, 0)
        if ep not in in_bags or in_bags[ep] >= seen:
            continue
        if ep in judged:
            missing += seen - in_bags[ep]
        bag = paths[ep]
        print(f"  {'episode' if ep in judged else 'ended while the graph stopped (not judged):'} {ep}: {seen} steps "
              f"seen, {in_bags[ep]} in its bag (outcome {read_custom_data(bag).get('outcome', '?')}); missing step "
              f"indices: {describe_missing(final['indices'][ep], bag_step_indices(bag))}")
    unbagged = [ep for ep in judged if ep not in in_bags and final["steps_per_episode"].get(ep)]
    lost = final["gaps"] + dropped + missing
    mark = "ok  " if lost == 0 and not unbagged else "FAIL"
    ok &= lost == 0 and not unbagged
    print(f"  {mark} steps lost: {lost} (step_index gaps {final['gaps']}, recorder dropped/rejected/late {dropped}, "
          f"missing from bags {missing}); finished episodes without a bag: {len(unbagged)}; "
          f"{final['counts'].get('steps', 0)} steps, {len(judged)} episodes judged (+{len(during_stop)} ended while "
          f"the graph stopped), recorder step subscription {rec.get('step_subscription', '?')}, bags "
          f"{size / 2**20:.1f} MB")
    print(f"  {'PASS' if ok else 'FAIL'}")
    return ok


if __name__ == "__main__":
    main()
