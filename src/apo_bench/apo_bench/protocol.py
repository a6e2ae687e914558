"""The benchmark protocol as cells: per task and training seed, the paper's experiment in simulation.

For task T and training seed s (every policy of one (T, s) starts from the same base and the same data):

1. ``demos``: scripted-expert demonstrations on demo seeds;
2. ``base``: behaviour cloning of a new policy on them (pi^0, deliberately imperfect: few demos), of the
   run's ``policy_architecture`` (small VLA or chunked VLA); every later policy starts from it;
3. ``deploy r0``: pi^0 deployed with the scripted operator (lockstep, the graph's arbiter/operator/
   labelling code), one bag per episode, converted with the real converter;
4. ``train <method> r1``: DAgger (BC on demos + corrections), KTO, DPO, APO from pi^0 on demos + r0;
5. ``eval``: every policy alone on the same evaluation seeds (and perturbed scenes for some);
6. lifelong, for the configured methods: deploy round r's policy, retrain from it on everything
   collected so far (the reference of round r+1 is round r's policy), up to ``lifelong.rounds``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from apo_bench.cells import Cell
from apo_bench.settings import BenchSettings
from apo_core.config import merge_overrides


class Protocol:
    """The cells of a run. Evaluation pools stay open between cells: use as a context manager (or close())."""

    def __init__(self, settings: BenchSettings, out, progress: bool = True):
        self.s = settings
        self.out = Path(out)
        self.progress = progress
        self._pools = None  # EvaluatorCache, started by the first evaluation cell

    def evaluators(self):
        """The run's pool cache: ``eval.workers`` simulators per pool, never more than an evaluation has seeds."""
        if self._pools is None:
            from apo_bench.evaluation import EvaluatorCache

            s = self.s
            most = max(s.eval.episodes, s.perturbations.episodes if s.perturbations.kinds else 0,
                       s.lifelong.eval_episodes)
            self._pools = EvaluatorCache(max(1, min(s.eval.workers, most)))
        return self._pools

    def close(self) -> None:
        if self._pools is not None:
            self._pools.close()
            self._pools = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- paths ---------------------------------------------------------------------------------------
    def work(self, task: str, seed: int) -> Path:
        return self.out / "work" / task / f"s{seed}"

    def policy_dir(self, task, seed, name) -> Path:
        return self.work(task, seed) / "policies" / name

    # --- the plan ------------------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        cells: list[Cell] = []
        s = self.s
        for task in s.tasks:
            for seed in s.train_seeds:
                cells += self._cells_for(task, seed)
        return cells

    def _cells_for(self, task: str, seed: int) -> list[Cell]:
        s = self.s
        a = {"task": task, "seed": seed}
        k_demos, k_base = f"demos/{task}/s{seed}", f"base/{task}/s{seed}"
        k_dep0 = f"deploy/{task}/s{seed}/base/r0"
        cells = [
            Cell(k_demos, lambda: self.collect(task, seed), [], {**a, "method": "base"}, 2),
            Cell(k_base, lambda: self.train_base(task, seed), [k_demos], {**a, "method": "base"}, 6),
            Cell(k_dep0, lambda: self.deploy(task, seed, "base", 0), [k_base], {**a, "method": "base"}, 3),
            Cell(self.eval_key(task, seed, "base"), lambda: self.evaluate(task, seed, "base"), [k_base],
                 {**a, "method": "base"}, 3),
        ]
        for method in s.methods:
            k_train = f"train/{task}/s{seed}/{method}/r1"
            cells.append(Cell(k_train, lambda m=method: self.train_method(task, seed, m, 1),
                              [k_demos, k_base, k_dep0], {**a, "method": method}, 2))
            cells.append(Cell(self.eval_key(task, seed, f"{method}_r1"),
                              lambda m=method: self.evaluate(task, seed, f"{m}_r1"), [k_train],
                              {**a, "method": method}, 3))
        for kind in s.perturbations.kinds:
            for method in s.perturbations.methods:
                name = "base" if method == "base" else f"{method}_r1"
                dep = k_base if method == "base" else f"train/{task}/s{seed}/{method}/r1"
                cells.append(Cell(self.eval_key(task, seed, name, kind),
                                  lambda n=name, p=kind: self.evaluate(task, seed, n, p, s.perturbations.episodes),
                                  [dep], {**a, "method": method}, 3))
        for method in s.lifelong.methods:
            for r in range(1, s.lifelong.rounds + 1):
                k_train = f"train/{task}/s{seed}/{method}/r{r}"
                k_dep = f"deploy/{task}/s{seed}/{method}/r{r}"
                if r > 1:
                    prev_deps = [k_dep0] + [f"deploy/{task}/s{seed}/{method}/r{q}" for q in range(1, r)]
                    cells.append(Cell(k_train, lambda m=method, q=r: self.train_method(task, seed, m, q),
                                      [k_demos, f"train/{task}/s{seed}/{method}/r{r - 1}", *prev_deps],
                                      {**a, "method": method}, 2))
                    if s.lifelong.eval_episodes:
                        cells.append(Cell(self.eval_key(task, seed, f"{method}_r{r}"),
                                          lambda m=method, q=r: self.evaluate(task, seed, f"{m}_r{q}", None,
                                                                              s.lifelong.eval_episodes),
                                          [k_train], {**a, "method": method}, 2))
                cells.append(Cell(k_dep, lambda m=method, q=r: self.deploy(task, seed, f"{m}_r{q}", q),
                                  [k_train], {**a, "method": method}, 3))
        return cells

    @staticmethod
    def eval_key(task, seed, policy, perturbation=None) -> str:
        return f"eval/{task}/s{seed}/{policy}/{perturbation or 'none'}"

    # --- cell bodies ---------------------------------------------------------------------------------
    def collect(self, task: str, seed: int) -> dict:
        from apo_sim.demos import collect_demos

        seeds = self.s.demo_seeds(seed, task)
        res = collect_demos(self.work(task, seed) / "expert.h5", task=task, episodes=len(seeds), seed=seeds[0],
                            image_size=self.s.image_size, camera=self.s.camera, control_freq=self.s.control_freq,
                            random_steps=self.s.demos.random_steps, progress=self.progress)
        if res.written + res.skipped_existing == 0:
            raise RuntimeError(f"the scripted expert solved none of {len(seeds)} {task} demo scenes")
        return {"written": res.written, "failed": res.failed, "steps": res.steps, "seeds": seeds}

    def train_base(self, task: str, seed: int) -> dict:
        from apo_trainer.config import BC_PRESET, load_train_config
        from apo_trainer.train import train

        out = self.policy_dir(task, seed, "base_run")
        bc, steps = self.s.bc, self.s.bc_steps(task)
        cfg = load_train_config(None, preset=BC_PRESET, overrides=merge_overrides({
            "output_dir": str(out),
            "data": {"paths": [str(self.work(task, seed) / "expert.h5")]},
            "policy": {"image_size": self.s.image_size, "init_seed": seed,
                       "architecture": self.s.policy_architecture, "chunk_horizon": self.s.chunk_horizon},
            "optim": {"lr": bc.lr},
            "train": {"max_steps": steps, "batch_size": bc.batch_size, "seed": seed,
                      "checkpoint_every": max(100, steps // 4), "log_every": 50,
                      "progress_bar": self.progress, "tensorboard": False, "torch_threads": self.s.torch_threads},
        }, bc.overrides))
        result = train(cfg)
        return self._publish_policy(result, self.policy_dir(task, seed, "base"), "base")

    def train_method(self, task: str, seed: int, method: str, round_: int) -> dict:
        from apo_trainer.config import load_train_config
        from apo_trainer.train import train

        ms = self.s.methods[method]
        start = "base" if round_ == 1 else f"{method}_r{round_ - 1}"
        data = [self.work(task, seed) / "expert.h5", self.dataset(task, seed, "base")]
        data += [self.dataset(task, seed, f"{method}_r{q}") for q in range(1, round_)]
        out = self.policy_dir(task, seed, f"{method}_r{round_}_run")
        overrides = merge_overrides(self.s.retrain_overrides(method), {
            "output_dir": str(out),
            "policy": {"path": str(self.policy_dir(task, seed, start))},
            "data": {"paths": [str(p) for p in data]},
            "loss": {"name": ms.loss},
            "train": {"seed": seed, "progress_bar": self.progress, "tensorboard": False,
                      "torch_threads": self.s.torch_threads},
        })
        result = train(load_train_config(None, overrides=overrides))
        info = self._publish_policy(result, self.policy_dir(task, seed, f"{method}_r{round_}"), f"{method}_r{round_}")
        info.update(start=start, data=[str(p) for p in data], loss=ms.loss)
        return info

    def _publish_policy(self, result, dest: Path, version: str) -> dict:
        """Copy the trained policy to its stable place (complete before it appears), label its version."""
        import json

        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(result.policy_dir, tmp)
        meta = tmp / "apo_policy.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            data["version"] = version
            meta.write_text(json.dumps(data, indent=2))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return {"policy": str(dest), "steps": result.steps,
                "final": {k: v for k, v in result.final.items() if isinstance(v, (int, float))}}

    def dataset(self, task, seed, policy: str) -> Path:
        """The converted deployment of ``policy`` (its own directory: the converter writes action_stats.json
        next to the file)."""
        return self.work(task, seed) / "data" / policy / "interactive.h5"

    def deploy(self, task: str, seed: int, policy: str, round_: int) -> dict:
        from apo_bench.deploy import LockstepDeployment
        from apo_core.policy import load_policy
        from apo_sim.env import SimEnv
        from apo_trainer.convert import convert_bags

        bags = self.work(task, seed) / "bags" / policy
        dataset = self.dataset(task, seed, policy)
        for stale in (bags, dataset.parent):  # a killed deployment is redone whole
            shutil.rmtree(stale, ignore_errors=True)
        pol = load_policy(self.policy_dir(task, seed, policy))
        pol.model.eval()
        env = SimEnv(task, image_size=self.s.image_size, camera=self.s.camera, control_freq=self.s.control_freq,
                     perturbation=self.s.deployment_scenes)
        episodes = []
        try:
            dep = LockstepDeployment(env, pol, max_steps=self.s.episode_limit(task), bags_dir=bags,
                                     episode_prefix=f"{task}-{policy}")
            seeds = self.s.deploy_seeds(seed, round_)
            for i, ep_seed in enumerate(seeds, 1):
                r = dep.run_episode(ep_seed)
                episodes.append({"seed": r.seed, "outcome": r.outcome, "steps": r.steps, "human_steps": r.human_steps,
                                 "takeovers": r.takeovers, "episode_id": r.episode_id})
                if self.progress:
                    print(f"[deploy] {task} s{seed} {policy} round {round_}: episode {i}/{len(seeds)} {r.outcome}, "
                          f"{r.takeovers} takeover(s), {r.human_steps}/{r.steps} human steps", flush=True)
        finally:
            env.close()
        report = convert_bags(bags, dataset, k=self._k(), progress=False)
        bad = [b for b in report.bags if b.status not in ("added",)]
        if bad:
            raise RuntimeError(f"conversion of {bags} reported {[(b.name, b.status) for b in bad]}")
        return {"policy": policy, "round": round_, "episodes": episodes, "dataset": str(dataset)}

    def _k(self) -> int:
        from apo_core.labels import DEFAULT_K

        return int(self.s.common_overrides.get("data", {}).get("k", DEFAULT_K))

    def evaluate(self, task: str, seed: int, policy: str, perturbation: str | None = None,
                 episodes: int | None = None) -> dict:
        from apo_bench.evaluation import evaluate_seeds

        seeds = self.s.eval_seeds(episodes)
        scenes = perturbation or self.s.deployment_scenes  # "none" in the records: the run's own scenes
        records = evaluate_seeds(self.policy_dir(task, seed, policy), task, seeds, self.s.episode_limit(task),
                                 control_freq=self.s.control_freq, perturbation=scenes,
                                 workers=self.s.eval.workers, progress=self.progress, pools=self.evaluators(),
                                 camera=self.s.camera)
        return {"policy": policy, "perturbation": perturbation or "none", "episodes": records}
