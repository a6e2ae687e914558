"""One retraining variant, measured: train from a base policy on given data, then evaluate it alone.

The tool behind bench/notes/apo-tuning.md. It prints one RESULT line and writes a JSON record with
the evaluation seeds it succeeded on, so variants are compared on the same scenes:

    python bench/retrain_variant.py apo_sft --work runs/bench/work/Lift/s0 --loss apo \
        --set loss.sft_weight=1.0 --set loss.weight_norm=mean
    python bench/retrain_variant.py base --eval-only runs/bench/work/Lift/s0/policies/base
    python bench/retrain_variant.py base_seed1 --work ... --from-scratch --init-seed 1
    python bench/retrain_variant.py base_replan1 --eval-only .../policies/base --policy-set replan_every=1

``--work`` is an `apo bench` work directory (expert.h5, data/base/interactive.h5, policies/base).
Keep torch at one thread (``--threads``) when other jobs share the cores: evaluation runs simulator
processes beside the policy forward.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--work", default="runs/bench/work/Lift/s0")
    ap.add_argument("--loss", default="apo", choices=["apo", "kto", "dpo", "bc"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="apo-train config override")
    ap.add_argument("--data", action="append", help="dataset files (default: the work dir's expert + base round)")
    ap.add_argument("--eval-only", metavar="POLICY_DIR", help="only evaluate this policy")
    ap.add_argument("--from-scratch", action="store_true", help="BC of a new small VLA (the bench's base recipe)")
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--task", default="Lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed-base", type=int, default=70000)
    ap.add_argument("--max-steps", type=int, default=None,
                    help="episode limit (default: the bench's for --task, config/bench.yaml max_steps; Lift 120)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-workers", type=int, default=None,
                    help="simulators of the evaluation pool (default: 6 per core; each holds about 400 MB)")
    ap.add_argument("--policy-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a load-time setting of the evaluated policy (chunked VLA: replan_every, ensemble_decay)")
    ap.add_argument("--camera", default=None,
                    help="simulator camera of the evaluation (default: the bench's, config/bench.yaml camera)")
    ap.add_argument("--out", default="runs/variants")
    a = ap.parse_args()

    import torch

    from apo_bench.settings import load_bench_settings
    from apo_core.config import merge_overrides, parse_dotted_overrides
    from apo_sim.pool_eval import evaluate_pooled
    from apo_trainer.config import BC_PRESET, load_train_config
    from apo_trainer.train import train

    torch.set_num_threads(a.threads)
    # Compare like with like: a variant is evaluated as the bench evaluates its cells (the same episode
    # limit and camera) unless told otherwise. Until 2026-12-07 the limit defaulted to 150 steps, 30 more
    # than the bench gives Lift.
    bench = load_bench_settings("default")
    max_steps = a.max_steps if a.max_steps is not None else bench.episode_limit(a.task)
    camera = a.camera or bench.camera
    work, out = Path(a.work), Path(a.out)
    t0 = time.time()
    info: dict = {"name": a.name, "loss": a.loss, "set": a.set, "task": a.task, "max_steps": max_steps,
                  "camera": camera, "seed_base": a.seed_base}
    if a.eval_only:
        policy_dir = Path(a.eval_only)
    else:
        data = a.data or [str(work / "expert.h5"), str(work / "data/base/interactive.h5")]
        ov = {"output_dir": str(out / a.name), "policy": {"path": str(work / "policies/base")},
              "data": {"paths": data, "k": 10}, "loss": {"name": a.loss}, "optim": {"lr": 3e-4},
              "train": {"batch_size": 8, "max_steps": 300, "log_every": 50, "checkpoint_every": 10000,
                        "progress_bar": False, "tensorboard": False, "torch_threads": a.threads, "resume": False}}
        preset = None
        if a.from_scratch:  # apo bench's base: BC_PRESET with bc.lr 1e-3, 600 steps, batch 32, 64 px
            preset = BC_PRESET
            ov = merge_overrides(ov, {"policy": {"path": None, "image_size": 64, "init_seed": a.init_seed},
                                      "optim": {"lr": 1e-3}, "lora": {"enabled": False},
                                      "train": {"max_steps": 600, "batch_size": 32, "seed": a.init_seed}})
        ov = merge_overrides(ov, parse_dotted_overrides(a.set))
        res = train(load_train_config(None, overrides=ov, preset=preset))
        policy_dir = res.policy_dir
        info["final"] = {k: v for k, v in res.final.items() if isinstance(v, (int, float))}
    info["train_s"] = time.time() - t0
    policy = str(policy_dir)
    if a.policy_set:
        from apo_core.policy import load_policy

        info["policy_set"] = a.policy_set
        policy = load_policy(policy_dir, **parse_dotted_overrides(a.policy_set))
    seeds = list(range(a.seed_base, a.seed_base + a.episodes))
    result = evaluate_pooled(policy, task=a.task, seeds=seeds, max_steps=max_steps, progress=True,
                             env_kwargs={"camera": camera}, envs=a.eval_workers)
    info.update(successes=result.successes, episodes=result.episodes,
                success_seeds=[r.seed for r in result.records if r.success], total_s=time.time() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(info, indent=1))
    print(f"RESULT {a.name}: {result.successes}/{result.episodes} (train {info['train_s']:.0f} s, "
          f"total {info['total_s']:.0f} s)", flush=True)


if __name__ == "__main__":  # evaluation starts simulator processes (spawn): keep the import side-effect free
    main()
