"""Re-publish recorded episode bags on their topics, in real time or faster (for RViz / Foxglove /
re-running a node on recorded input).

Messages go out as the CDR bytes stored in the bag (no re-serialisation), on publishers of the
recorded types, in log-time order, spaced by their recorded log times divided by ``rate``
(``rate <= 0``: as fast as possible). Latched topics (/apo/mode, /apo/episode) keep their latching.

    apo_replay BAG [BAG ...] [--rate 2.0] [--topics /apo/step /apo/camera/image_raw] [--loop]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from apo_core import topics
from apo_recorder.reader import iter_messages, list_episode_bags
from apo_ros.qos import qos_profile, topic_qos


def message_class(msgtype: str):
    """``pkg/msg/Type`` -> the rclpy message class (the package must be installed)."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise RuntimeError(f"cannot replay {msgtype}: its ROS package is not installed ({exc})") from exc


def expand_bags(paths: Iterable) -> list[Path]:
    """Bag directories, or directories of bags (each episode in name order)."""
    out = []
    for p in map(Path, paths):
        if (p / "metadata.yaml").is_file():
            out.append(p)
        elif p.is_dir():
            bags = list_episode_bags(p)
            if not bags:
                raise FileNotFoundError(f"no complete bag in {p} (run apo_recover_bag on a killed recording)")
            out.extend(bags)
        else:
            raise FileNotFoundError(f"bag not found: {p}")
    return out


class BagReplayer:
    def __init__(self, node, rate: float = 1.0, topics: list[str] | None = None):
        self.node = node
        self.rate = rate
        self.topics = topics
        self._pubs = {}
        self.published = 0

    def _publisher(self, topic: str, msgtype: str):
        pub = self._pubs.get(topic)
        if pub is None:
            try:
                # /apo/step as the arbiter offers it, so a recorder asking for its history matches a replay too
                qos = qos_profile(*topics.STEP_OFFERED) if topic == topics.STEP else topic_qos(topic)
            except KeyError:
                qos = qos_profile("reliable", 10)
            pub = self._pubs[topic] = self.node.create_publisher(message_class(msgtype), topic, qos)
        return pub

    def prepare(self, bag: Path) -> dict:
        """Create the publishers of a bag up front (so subscribers can match before the first message)."""
        from apo_recorder.reader import read_bag_info

        info = read_bag_info(bag)
        for topic, t in info.topics.items():
            if self.topics is None or topic in self.topics:
                self._publisher(topic, t.msgtype)
        return dict(self._pubs)

    def play(self, bag: Path, should_stop=lambda: False) -> int:
        """Publish one bag; returns the number of messages published."""
        t0_wall, t0_log, n = None, None, 0
        for m in iter_messages(bag, self.topics, decode=False):
            if should_stop():
                break
            pub = self._publisher(m.topic, m.msgtype)
            if self.rate > 0:
                if t0_wall is None:
                    t0_wall, t0_log = time.monotonic(), m.log_time_ns
                due = t0_wall + (m.log_time_ns - t0_log) / 1e9 / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pub.publish(m.data)
            n += 1
        self.published += n
        return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="apo_replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bags", nargs="+", help="episode bag directories, or directories holding them")
    ap.add_argument("--rate", type=float, default=1.0, help="speed factor (0 = as fast as possible)")
    ap.add_argument("--topics", nargs="*", help="only these topics (default: all recorded)")
    ap.add_argument("--loop", action="store_true", help="start over after the last bag")
    ap.add_argument("--wait-subscribers", type=float, default=1.0,
                    help="seconds to give subscribers to match before the first message")
    args, ros_args = ap.parse_known_args(argv)
    try:
        bags = expand_bags(args.bags)
    except FileNotFoundError as exc:
        print(f"apo_replay: error: {exc}", file=sys.stderr)
        return 2
    # A node like every other (apo_ros.run_node: signals, exit codes); the bags play in a worker thread
    # and the node stops when they are done, or at Ctrl-C / SIGTERM.
    from apo_ros.node import run_node

    stop, done = threading.Event(), threading.Event()
    worker: dict = {}

    def play_all(node, replayer):
        try:
            while not stop.is_set():
                for bag in bags:
                    replayer.prepare(bag)
                    if stop.wait(args.wait_subscribers):
                        return
                    n = replayer.play(bag, should_stop=stop.is_set)
                    node.get_logger().info(f"{bag.name}: {n} messages")
                    if stop.is_set():
                        return
                if not args.loop:
                    return
        except Exception as exc:
            worker["error"] = exc
        finally:
            done.set()

    def make_node():
        import rclpy

        node = rclpy.create_node("apo_replay")
        replayer = BagReplayer(node, args.rate, args.topics)
        worker["thread"] = threading.Thread(target=play_all, args=(node, replayer), name="apo_replay", daemon=True)
        worker["thread"].start()
        return node

    def shutdown(node):
        stop.set()
        if "thread" in worker:
            worker["thread"].join(timeout=10.0)

    rc = run_node(make_node, "apo_replay", ros_args, should_stop=lambda node: done.is_set(), shutdown=shutdown)
    if "error" in worker:
        exc = worker["error"]
        print(f"apo_replay: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
