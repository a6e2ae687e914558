"""Conversion throughput (MB/s of bag data) against a bare read of the same bags, side by side.

    python bench/bench_convert.py [--episodes 4] [--steps 300] [--image 224] [--repeats 2]

Writes synthetic episode bags in the recorder's layout (rosbags Writer, MCAP), then times on the
same files, page cache warm, best of ``--repeats``:

- rosbags AnyReader: iterate every message and deserialise it (the library's own reader, a floor);
- bare read: ``EpisodeBag.messages()`` over every topic, indexed path (iterate + deserialise);
- bare read, scanning path (how a damaged bag is read);
- conversion: ``convert_bags`` into a fresh HDF5 file (alignment, staging, append_episode, stats);
- conversion in a child process, for its peak anonymous memory (RssAnon, sampled) and VmHWM next
  to the size of one bag (the process's own memory must not grow with the episode).

Prints MB/s per line and the ratio conversion / bare read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apo_core.bags import EpisodeBag, bag_bytes, find_bags
from apo_trainer.bag_reader_samples import SampleEpisode, write_sample_bag
from apo_trainer.convert import convert_bags


def make_bags(root: Path, episodes: int, steps: int, image: int) -> float:
    t0 = time.perf_counter()
    for e in range(episodes):
        labels = ([1] * (steps // 2) + [2] * (steps // 6) + [1] * steps)[:steps]
        write_sample_bag(root, SampleEpisode(f"ep_{e:04d}", labels, image_size=(image, image)))
    return time.perf_counter() - t0


def anyreader_read(bags) -> int:
    from rosbags.highlevel import AnyReader

    n = 0
    for bag in bags:
        with AnyReader([bag]) as reader:
            for conn, _, raw in reader.messages():
                reader.deserialize(raw, conn.msgtype)
                n += 1
    return n


def bare_read(bags, recover: str) -> int:
    n = 0
    for bag in bags:
        with EpisodeBag(bag, recover=recover) as reader:
            for _ in reader.messages():
                n += 1
    return n


def convert(bags_dir: Path, work: Path) -> int:
    out = work / "bench.h5"
    if out.exists():
        out.unlink()
    report = convert_bags(bags_dir, out, progress=False, settle_seconds=0)
    if report.failed or len(report.added) != len(report.bags):
        raise SystemExit(report.summary())
    return report.steps_added


def best(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


# Peak RSS from VmHWM (per address space): ru_maxrss would also count the parent's pages, since
# Linux carries it across fork and exec. VmHWM includes the memory-mapped staging file the images
# are handed to append_episode from (clean page cache the kernel can drop), so the peak of
# RssAnon (the process's own heap) is sampled too: that is the figure that must stay bounded.
CHILD = """
import json, sys, threading, time
from apo_trainer.convert import convert_bags

def status(key):
    with open('/proc/self/status') as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])

peak = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status('RssAnon'))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
r = convert_bags(sys.argv[1], sys.argv[2], progress=False, settle_seconds=0)
dt = time.perf_counter() - t0
done.set()
print(json.dumps({"seconds": dt, "steps": r.steps_added, "hwm_kb": status('VmHWM'), "anon_kb": peak[0]}))
"""

BASELINE = """
import json
import apo_trainer.convert, apo_core.bags, h5py, rosbags.rosbag2, rosbags.typesys
def status(key):
    with open('/proc/self/status') as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])
print(json.dumps({"hwm_kb": status('VmHWM'), "anon_kb": status('RssAnon')}))
"""


def child_rss(args: list[str], code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--image", type=int, default=224, help="square image side in pixels")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="apo-bench-convert-"))
    try:
        bags_dir = work / "bags"
        wrote = make_bags(bags_dir, a.episodes, a.steps, a.image)
        bags = find_bags(bags_dir)
        mb = sum(bag_bytes(b) for b in bags) / 1e6
        print(f"{len(bags)} bags x {a.steps} steps, {a.image}x{a.image} rgb8: {mb:.1f} MB "
              f"(written in {wrote:.1f} s, {mb / wrote:.0f} MB/s)")
        bare_read(bags, "auto")  # warm the page cache and the type-store code generation

        t_any, n_any = best(lambda: anyreader_read(bags), a.repeats)
        t_bare, n_bare = best(lambda: bare_read(bags, "auto"), a.repeats)
        t_scan, n_scan = best(lambda: bare_read(bags, "always"), a.repeats)
        t_conv, steps = best(lambda: convert(bags_dir, work), a.repeats)
        assert n_any == n_bare == n_scan, (n_any, n_bare, n_scan)
        print(f"rosbags AnyReader read+deserialise : {mb / t_any:8.1f} MB/s  ({n_any} messages, {t_any:.2f} s)")
        print(f"bare read (indexed) read+deserialise: {mb / t_bare:8.1f} MB/s  ({t_bare:.2f} s)")
        print(f"bare read (scanning path)           : {mb / t_scan:8.1f} MB/s  ({t_scan:.2f} s)")
        print(f"conversion to HDF5                  : {mb / t_conv:8.1f} MB/s  ({steps} samples, {t_conv:.2f} s, "
              f"{steps / t_conv:.0f} samples/s)")
        print(f"ratio conversion / bare read        : {t_bare / t_conv:8.2f}  (1.0 = conversion as fast as reading)")
        print(f"ratio bare read / rosbags AnyReader : {t_any / t_bare:8.2f}")

        out = work / "child.h5"
        child = child_rss([str(bags_dir), str(out)], CHILD)
        base = child_rss([], BASELINE)
        per_bag = mb / len(bags)
        print(f"conversion process, peak RssAnon    : {child['anon_kb'] / 1e3:8.1f} MB (after imports "
              f"{base['anon_kb'] / 1e3:.1f} MB; one bag is {per_bag:.1f} MB, all bags {mb:.1f} MB)")
        print(f"conversion process, VmHWM           : {child['hwm_kb'] / 1e3:8.1f} MB (imports alone "
              f"{base['hwm_kb'] / 1e3:.1f} MB; includes the mapped staging file of the largest episode)")
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
