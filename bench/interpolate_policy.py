"""Weight interpolation between a base policy and a policy retrained from it (robust fine-tuning).

Writes OUT, a copy of RETRAINED whose weights are ``(1 - alpha) * base + alpha * retrained`` (floating-point
tensors; integer buffers are the retrained policy's). alpha 0 is the base, 1 the retrained policy. The
question it answers (bench notes, tenth pass): does a retraining round carry a gain that its loss of
precision elsewhere hides, so that part of the way from the base to the retrained policy beats both?

    python bench/interpolate_policy.py runs/bench/work/Lift/s0/policies/base \
        runs/bench/work/Lift/s0/policies/apo_r1 runs/interp/apo_a0.5 --alpha 0.5
    python bench/retrain_variant.py apo_a0.5 --eval-only runs/interp/apo_a0.5 --task Lift

Both directories must hold the same architecture (same tensor names and shapes) in ``model.safetensors``,
as `apo-train` saves a small or chunked VLA (LoRA merged).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WEIGHTS = "model.safetensors"


def interpolate(base: Path, retrained: Path, out: Path, alpha: float) -> Path:
    from safetensors.torch import load_file, save_file

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    for d in (base, retrained):
        if not (d / WEIGHTS).is_file():
            raise FileNotFoundError(f"{d} has no {WEIGHTS}")
    a, b = load_file(base / WEIGHTS), load_file(retrained / WEIGHTS)
    if a.keys() != b.keys():
        raise ValueError(f"different architectures: tensors only in the base {sorted(a.keys() - b.keys())[:5]}, "
                         f"only in the retrained policy {sorted(b.keys() - a.keys())[:5]}")
    mixed = {}
    for name, t in b.items():
        if a[name].shape != t.shape:
            raise ValueError(f"{name}: shape {tuple(a[name].shape)} in the base, {tuple(t.shape)} retrained")
        mixed[name] = (a[name] * (1 - alpha) + t * alpha).to(t.dtype) if t.is_floating_point() else t.clone()
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(retrained, out)
    save_file(mixed, str(out / WEIGHTS), metadata={"format": "pt"})
    meta_path = out / "apo_policy.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = out.name
    meta["interpolated"] = {"base": str(base), "retrained": str(retrained), "alpha": alpha}
    meta_path.write_text(json.dumps(meta, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("retrained", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--alpha", type=float, default=0.5, help="share of the retrained policy (0 = base, 1 = retrained)")
    a = ap.parse_args()
    try:
        out = interpolate(a.base, a.retrained, a.out, a.alpha)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"interpolate_policy: {exc}")
    print(f"wrote {out} (alpha {a.alpha})")


if __name__ == "__main__":
    main()
