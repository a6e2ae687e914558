"""Settings of ``apo bench`` (``config/bench.yaml``): one strict dataclass, presets as partial overrides.

The file holds ``defaults`` (every key, documented) and ``presets`` (``quick``, ``default``, ``refit``, ``gpu``),
each a partial mapping merged over the defaults; ``--set key=value`` overrides come last. Seeds are
derived, never drawn: demonstrations, interactive episodes and evaluation scenes use disjoint ranges
(checked), so no policy is ever evaluated on a scene it was trained or corrected on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apo_core.config import find_shared_config, load_config, merge_overrides, read_yaml
from apo_core.errors import ConfigError
from apo_core.tasks import TASK_DEFAULTS

METHODS = ("dagger", "kto", "dpo", "apo")
PERTURBATIONS = ("position", "background", "texture")
ARCHITECTURES = ("small_vla", "chunked_vla")  # apo-train's policy.architecture for a new (base) policy
SEED_STRIDE = 1000  # seeds of one training seed / round never overlap the next one's


@dataclass
class ExpertDemoSettings:
    episodes: int = 10  # few demos: the base policy should be imperfect (paper's base: 20-60 %)
    # Demos of the tasks that need another count to land their base in that band (e.g. {Stack: 40}).
    episodes_per_task: dict[str, int] = field(default_factory=dict)
    seed_base: int = 0  # demo scene seeds: seed_base + SEED_STRIDE * train_seed + i
    random_steps: int = 0  # unrecorded random actions before the expert starts (shows recoveries)


@dataclass
class BCSettings:
    steps: int = 1000
    # BC steps of the tasks whose demos need a longer fit (a longer task's base underfits at Lift's budget).
    steps_per_task: dict[str, int] = field(default_factory=dict)
    batch_size: int = 32
    lr: float = 1e-3
    overrides: dict[str, Any] = field(default_factory=dict)  # more apo-train config keys


@dataclass
class DeploySettings:
    episodes: int = 20  # interactive episodes per round (the scripted operator watching)
    seed_base: int = 100_000  # interactive seeds: seed_base + SEED_STRIDE * (10 * train_seed + round) + i
    max_steps: int = 150


@dataclass
class MethodSettings:
    loss: str = "apo"
    # apo-train config overrides (e.g. optim.lr, train.max_steps, loss.beta, lora.enabled)
    overrides: dict[str, Any] = field(default_factory=dict)
    # More overrides for one policy architecture, merged over ``overrides`` when the run trains it: a recipe
    # chosen on one family need not suit another (the chunked VLA's retraining lr; bench/notes).
    overrides_by_architecture: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvalSettings:
    episodes: int = 50
    seed_base: int = 70_000  # evaluation scenes: seed_base + i, the same for every method and seed
    max_steps: int = 150
    workers: int = 2  # environments stepped in lockstep with one batched policy forward


@dataclass
class LifelongSettings:
    rounds: int = 3
    methods: list[str] = field(default_factory=lambda: ["apo", "dagger"])
    eval_episodes: int = 20  # autonomous evaluation of each round's policy (0: deployment figures only)


@dataclass
class PerturbationSettings:
    kinds: list[str] = field(default_factory=lambda: list(PERTURBATIONS))
    methods: list[str] = field(default_factory=lambda: ["base", "kto", "apo"])
    episodes: int = 50


@dataclass
class BenchSettings:
    tasks: list[str] = field(default_factory=lambda: ["Lift", "Stack", "PickPlaceCan"])
    train_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    image_size: int = 64
    # The policy family of the run: the base policy is trained as this architecture, and every later cell
    # (deployment, each method's retraining, evaluation) starts from it. small_vla: one token per action
    # dimension per control step; chunked_vla: a chunk of chunk_horizon actions as FAST tokens (pi0-FAST
    # style), executed one action per step, re-planned every chunk_horizon // 2 steps.
    policy_architecture: str = "small_vla"
    chunk_horizon: int = 8  # chunked_vla only: actions per chunk (apo-train's policy.chunk_horizon)
    # The simulator camera every policy of the run sees (demos, deployment, evaluation); see apo_sim.env.
    camera: str = "agentview"
    # Where the robot works after its demos (None: the demos' scenes). A perturbation kind (e.g.
    # "position") is the deployment shift takeovers exist for: demos stay in the training range, while
    # deployment (with takeovers) and the main evaluation use the perturbed scenes. Every policy is still
    # evaluated on the same scene seeds, so the comparison stays paired.
    deployment_scenes: str | None = None
    control_freq: float = 20.0
    torch_threads: int = 2
    max_steps: dict[str, int] = field(default_factory=dict)  # per-task episode limit (deploy and eval)
    demos: ExpertDemoSettings = field(default_factory=ExpertDemoSettings)
    bc: BCSettings = field(default_factory=BCSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    methods: dict[str, MethodSettings] = field(default_factory=dict)
    common_overrides: dict[str, Any] = field(default_factory=dict)  # apo-train keys for every method
    eval: EvalSettings = field(default_factory=EvalSettings)
    lifelong: LifelongSettings = field(default_factory=LifelongSettings)
    perturbations: PerturbationSettings = field(default_factory=PerturbationSettings)

    def validate(self) -> None:
        if not self.tasks or not self.train_seeds:
            raise ConfigError("tasks and train_seeds must each name at least one entry")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown method(s) {unknown}; valid: {list(METHODS)}")
        for name in (*self.lifelong.methods, *[m for m in self.perturbations.methods if m != "base"]):
            if name not in self.methods:
                raise ConfigError(f"method {name!r} is used by lifelong/perturbations but not configured in methods")
        for name, ms in self.methods.items():
            bad = [a for a in ms.overrides_by_architecture if a not in ARCHITECTURES]
            if bad:
                raise ConfigError(f"methods.{name}.overrides_by_architecture: unknown architecture(s) {bad}; "
                                  f"valid: {list(ARCHITECTURES)}")
        self._check_retrain_overrides()
        if self.policy_architecture not in ARCHITECTURES:
            raise ConfigError(f"policy_architecture: unknown {self.policy_architecture!r}; valid: {list(ARCHITECTURES)}")
        if isinstance(self.chunk_horizon, bool) or self.chunk_horizon < 1:
            raise ConfigError(f"chunk_horizon must be an integer >= 1, got {self.chunk_horizon!r}")
        if self.deployment_scenes is not None and self.deployment_scenes not in PERTURBATIONS:
            raise ConfigError(f"deployment_scenes: unknown {self.deployment_scenes!r}; valid: null or one of "
                              f"{list(PERTURBATIONS)}")
        bad = [k for k in self.perturbations.kinds if k not in PERTURBATIONS]
        if bad:
            raise ConfigError(f"perturbations.kinds: unknown {bad}; valid: {list(PERTURBATIONS)}")
        _check_per_task("demos.episodes_per_task", self.demos.episodes_per_task)
        _check_per_task("bc.steps_per_task", self.bc.steps_per_task)
        for key, value in (("demos.episodes", self.demos.episodes), ("deploy.episodes", self.deploy.episodes),
                           ("eval.episodes", self.eval.episodes), ("eval.workers", self.eval.workers),
                           ("bc.steps", self.bc.steps)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        self.check_seed_ranges()

    def method_overrides(self, method: str, architecture: str | None = None) -> dict[str, Any]:
        """``method``'s own apo-train overrides for ``architecture`` (default: the run's): its ``overrides``
        with its entry of ``overrides_by_architecture`` merged over them."""
        ms = self.methods[method]
        by_arch = ms.overrides_by_architecture.get(architecture or self.policy_architecture, {})
        return merge_overrides(ms.overrides, by_arch)

    def retrain_overrides(self, method: str, architecture: str | None = None) -> dict[str, Any]:
        """The apo-train overrides of ``method`` in this run: common ones, the method's, then the method's
        for the policy architecture (later ones win)."""
        return merge_overrides(self.common_overrides, self.method_overrides(method, architecture))

    def _check_retrain_overrides(self) -> None:
        """Load every method's apo-train config for every architecture now, so a misspelt key fails at
        start-up rather than hours into a run (or never, for the architecture not run this time)."""
        from apo_trainer.config import load_train_config

        # Stand-ins for what the protocol fills in per cell; nothing is read from them here.
        cell = {"output_dir": "cell", "policy": {"path": "base"}, "data": {"paths": ["interactive.h5"]}}
        for name, ms in self.methods.items():
            for arch in ARCHITECTURES:
                try:
                    load_train_config(None, overrides=merge_overrides(self.retrain_overrides(name, arch),
                                                                      {**cell, "loss": {"name": ms.loss}}))
                except ConfigError as exc:
                    raise ConfigError(f"methods.{name} ({arch}): {exc}") from exc

    # --- seeds -------------------------------------------------------------------------------------
    def bc_steps(self, task: str) -> int:
        return int(self.bc.steps_per_task.get(task, self.bc.steps))

    def demo_episodes(self, task: str) -> int:
        return int(self.demos.episodes_per_task.get(task, self.demos.episodes))

    def demo_seeds(self, train_seed: int, task: str) -> list[int]:
        start = self.demos.seed_base + SEED_STRIDE * train_seed
        return list(range(start, start + self.demo_episodes(task)))

    def deploy_seeds(self, train_seed: int, round_: int) -> list[int]:
        start = self.deploy.seed_base + SEED_STRIDE * (10 * train_seed + round_)
        return list(range(start, start + self.deploy.episodes))

    def eval_seeds(self, episodes: int | None = None) -> list[int]:
        return list(range(self.eval.seed_base, self.eval.seed_base + (episodes or self.eval.episodes)))

    def check_seed_ranges(self) -> None:
        """Evaluation scenes must be disjoint from every demo and interactive scene."""
        evals = set(self.eval_seeds(max(self.eval.episodes, self.perturbations.episodes,
                                        self.lifelong.eval_episodes)))
        used = set()
        for s in self.train_seeds:
            for task in self.tasks:
                used.update(self.demo_seeds(s, task))
            for r in range(self.lifelong.rounds + 1):
                used.update(self.deploy_seeds(s, r))
        overlap = sorted(evals & used)
        if overlap:
            raise ConfigError(f"evaluation seeds overlap training/interactive seeds (e.g. {overlap[:5]}): "
                              "choose another eval.seed_base (--eval-seed-base)")
        if self.deploy.episodes > SEED_STRIDE or max(map(self.demo_episodes, self.tasks)) > SEED_STRIDE:
            raise ConfigError(f"at most {SEED_STRIDE} demo/interactive episodes per seed and round")

    def episode_limit(self, task: str) -> int:
        return int(self.max_steps.get(task, self.eval.max_steps))


def _check_per_task(key: str, values: dict) -> None:
    bad = sorted(set(values) - set(TASK_DEFAULTS))
    if bad:
        raise ConfigError(f"{key}: unknown task(s) {bad}; valid: {list(TASK_DEFAULTS)}")
    for task, value in values.items():  # the strict loader has already made every value an int
        if value < 1:
            raise ConfigError(f"{key}.{task} must be an integer >= 1, got {value!r}")


def load_bench_settings(preset: str = "default", path=None, overrides: dict | None = None) -> BenchSettings:
    path = Path(path) if path else find_shared_config("bench.yaml")
    data = read_yaml(path)
    unknown = set(data) - {"defaults", "presets"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} "
                          "(expected 'defaults', 'presets')")
    presets = data.get("presets") or {}
    if preset not in presets:
        raise ConfigError(f"unknown bench preset {preset!r}; presets in the file: {sorted(presets)}")
    merged = merge_overrides(data.get("defaults") or {}, presets[preset] or {})
    if overrides:
        merged = merge_overrides(merged, overrides)
    return load_config(BenchSettings, merged)
