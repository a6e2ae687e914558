"""Bars of this pass's probes (bench notes, eighth pass), recomputed from the cell / variant records next to it:
    .venv/bin/python bench/notes/runs/2026-12-07-stack-pickplace/plot.py"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from apo_bench.report import wilson

HERE = Path(__file__).parent
BARS = [  # label, record, kind
    ("Stack chunked base\n80x4000, replan 4", "stack-chunked/eval__Stack__s0__base__none.json", "cell"),
    ("Stack chunked DAgger", "stack-chunked/eval__Stack__s0__dagger_r1__none.json", "cell"),
    ("Stack chunked APO", "stack-chunked/eval__Stack__s0__apo_r1__none.json", "cell"),
    ("Stack chunked base\nreplan 1", "stack-chunked/stack_chunked_s0_replan1.json", "variant"),
    ("Stack chunked base\nreplan 1 + ensemble", "stack-chunked/stack_chunked_s0_replan1_ens05.json", "variant"),
    ("PickPlaceCan small\nbase 20x2000", "ppc-small-20/eval__PickPlaceCan__s0__base__none.json", "cell"),
    ("PickPlaceCan small\nbase 80x4000", "ppc-small-80/eval__PickPlaceCan__s0__base__none.json", "cell"),
    ("PickPlaceCan chunked\nbase 20x2000", "ppc-chunked-20/eval__PickPlaceCan__s0__base__none.json", "cell"),
]


def counts(path: Path, kind: str) -> tuple[int, int]:
    record = json.loads(path.read_text())
    if kind == "cell":
        return sum(bool(e["success"]) for e in record["episodes"]), len(record["episodes"])
    return record["successes"], record["episodes"]


def main() -> None:
    labels, rates, lows, highs = [], [], [], []
    for label, rel, kind in BARS:
        if not (HERE / rel).is_file():
            continue
        s, n = counts(HERE / rel, kind)
        lo, hi = wilson(s, n)
        labels.append(f"{label}\n{s}/{n}")
        rates.append(100 * s / n)
        lows.append(max(0.0, 100 * (s / n - lo)))  # float rounding at 0 successes
        highs.append(max(0.0, 100 * (hi - s / n)))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.bar(range(len(rates)), rates, yerr=[lows, highs], capsize=4, color="tab:blue")
    ax.axhspan(20, 60, color="tab:green", alpha=0.1, label="protocol's band for a base (20-60 %)")
    ax.set_xticks(range(len(rates)), labels, fontsize=8)
    ax.set_ylabel("autonomous success % (Wilson 95 %)")
    ax.set_title("Training seed 0, evaluation scenes 70000-70049, wrist camera 64 px")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(HERE / "success.png", dpi=110)
    print(HERE / "success.png")


if __name__ == "__main__":
    main()
