"""``apo_recover_bag DIR...``: repair episode bags left by a killed recorder (ROS-free).

Each DIR is either one episode bag or an output directory; in the latter case every unfinished
bag under it (an MCAP file without metadata.yaml) is recovered. Prints one line per bag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apo_recorder.reader import list_unfinished_bags
from apo_recorder.recovery import RecoveryError, recover_bag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apo_recover_bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="episode bag directories or output directories")
    parser.add_argument("--keep-original", action="store_true", help="keep the damaged bag as .<name>.partial")
    parser.add_argument("--force", action="store_true", help="recover even if the journal's recorder is alive")
    args = parser.parse_args(argv)
    failures = 0
    for root in args.paths:
        bags = [root] if any(root.glob("*.mcap")) else list_unfinished_bags(root)
        if not bags:
            print(f"{root}: no unfinished bag found")
        for bag in bags:
            try:
                rep = recover_bag(bag, keep_original=args.keep_original, force=args.force)
            except (RecoveryError, OSError) as exc:
                failures += 1
                print(f"{bag}: NOT recovered: {exc}", file=sys.stderr)
                continue
            print(f"{bag}: {rep.status}, {rep.messages_recovered} messages "
                  f"({rep.bytes_discarded} bytes discarded; {rep.stop_reason})")
            for line in rep.chunks_dropped:
                print(f"    {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
