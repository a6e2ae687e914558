"""Settings of the retrain service: where data and models live, how training runs, what gates promotion.

Loaded strictly from YAML (``config/retrain.yaml``) with :func:`apo_core.config.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apo_core.config import flatten_dotted, load_config, merge_overrides, read_yaml
from apo_core.errors import ConfigError
from apo_core.labels import DEFAULT_K
from apo_core.names import VERSION_RE
from apo_core.tasks import TASK_DEFAULTS
from apo_trainer.retrain.requests import RetrainRequestError, check_k, check_loss, check_steps

# What backend.command may name; the job fills them in (retrain/job.py).
COMMAND_PLACEHOLDERS = ("config", "output_dir", "job_id", "work_dir", "python", "nproc")
MAX_NPROC = 1024


@dataclass
class BackendSettings:
    # local: a subprocess on this machine (torchrun when nproc > 1);
    # command: any command line (ssh to the GPU node, sbatch --wait, ...) over shared storage.
    kind: Literal["local", "command"] = "local"
    nproc: int = 1
    # For kind=command, run by /bin/sh. Placeholders: {config} {output_dir} {job_id} {work_dir} {python}
    # {nproc}; each is replaced by its shell-quoted value (one literal word, whatever the path holds), so
    # write them outside quotes; literal braces are {{ }}. The paths must be the same on both machines
    # (shared storage). ssh joins its arguments and the remote shell parses them again: keep shared
    # paths to plain characters there. Example:
    #   ssh gpu-node 'cd /shared/apo && .venv/bin/torchrun --nproc_per_node 4 -m apo_trainer.train --config {config}'
    command: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class DefaultsSettings:
    loss: str = "apo"  # a loss name of apo_trainer.objectives.LOSS_NAMES
    steps: int = 300
    k: int = DEFAULT_K


GATES = ("heldout_l1", "sim_success_rate", "both")
REFERENCE_CHOICES = ("previous", "base")


@dataclass
class PromotionEvalSettings:
    """The ``eval`` section: how a round's candidate is judged for promotion (held-out L1, simulated gate)."""

    heldout_every: int = 10  # every n-th new interactive episode is held out for evaluation (0: none)
    # What decides a promotion (src/apo_trainer/README.md, "Promotion gate"): heldout_l1 (action L1 on the
    # held-out episodes' recorded steps), sim_success_rate (the candidate and the deployed version rolled
    # out in a simulator on the same seeds), both, or auto: sim_success_rate when ``robot`` is sim and the
    # caller gave RetrainManager a simulator evaluator (the retrain node does), else heldout_l1.
    gate: Literal["auto", "heldout_l1", "sim_success_rate", "both"] = "auto"
    max_l1_ratio: float = 1.05  # heldout_l1: promote only if candidate held-out L1 <= ratio * base held-out L1
    min_success_ratio: float = 1.0  # sim_success_rate: candidate success rate >= ratio * base success rate
    sim_episodes: int = 10
    sim_task: str = "Lift"
    sim_seed: int = 10_000
    sim_max_steps: int = 0  # 0: the task's default episode limit (apo_core.tasks)
    # torch CPU threads while the service evaluates in its own process (held-out L1, simulated rollouts);
    # 0: torch's default (every core, which contends with the deployed nodes: a tiny policy's step went
    # from 11 ms to 1 s on a busy 2-core machine)
    torch_threads: int = 1

    def effective_gate(self, robot: str, simulator: bool = True) -> str:
        """The gate that decides; ``simulator``: whether the caller can roll policies out in simulation."""
        if self.gate != "auto":
            return self.gate
        return "sim_success_rate" if robot == "sim" and simulator else "heldout_l1"


@dataclass
class RetrainSettings:
    work_dir: str = "runs/retrain"  # datasets, job directories, registry of trained episodes
    bags_dir: str = "runs/bags"  # the recorder's output
    model_store: str = "runs/models"  # versions/ + current
    expert_data: str | None = None  # HDF5 of expert demonstrations (always trained on)
    backend: BackendSettings = field(default_factory=BackendSettings)
    defaults: DefaultsSettings = field(default_factory=DefaultsSettings)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # merged into every job's apo-train config
    # Per loss name, merged after train_overrides into the jobs of that loss only: settings one loss
    # needs and another refuses (apo's data.kinds with undesirable steps; bc and dpo refuse them).
    loss_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: PromotionEvalSettings = field(default_factory=PromotionEvalSettings)
    lifelong_every_n_episodes: int = 0  # retrain automatically every N new interactive episodes (0: off)
    min_new_episodes: int = 1
    # What the deployment drives: sim (apo_sim, so candidates can be rolled out in it) or real. The deploy
    # graph passes its robot argument; it chooses the promotion gate when eval.gate is auto.
    robot: Literal["real", "sim"] = "real"
    # APO's reference policy pi_ref of a round: previous (the version being retrained, i.e. the deployed one
    # the round starts from, the paper's), base (the model store's first version) or a version name (v0001).
    reference: str = "previous"

    def validate(self):
        if self.backend.kind == "command":
            if not self.backend.command:
                raise ConfigError("backend.command is empty but backend.kind is 'command'")
            check_command_template(self.backend.command)
        if not 1 <= self.backend.nproc <= MAX_NPROC:
            raise ConfigError(f"backend.nproc must be in [1, {MAX_NPROC}], got {self.backend.nproc}")
        try:
            check_loss(self.defaults.loss, "defaults.loss")
            check_steps(self.defaults.steps, "defaults.steps", allow_default=False)
            check_k(self.defaults.k, "defaults.k", allow_default=False)
        except RetrainRequestError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("lifelong_every_n_episodes", "min_new_episodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval.heldout_every < 0:
            raise ConfigError(f"eval.heldout_every must be >= 0 (0: none held out), got {self.eval.heldout_every}")
        ev = self.eval
        if ev.sim_episodes < 1 or ev.sim_max_steps < 0:
            raise ConfigError(f"eval.sim_episodes must be >= 1 and eval.sim_max_steps >= 0 (0: the task's default), "
                              f"got {ev.sim_episodes} and {ev.sim_max_steps}")
        if ev.torch_threads < 0:
            raise ConfigError(f"eval.torch_threads must be >= 0 (0: torch's default), got {ev.torch_threads}")
        for name in ("max_l1_ratio", "min_success_ratio"):
            if not getattr(ev, name) > 0:
                raise ConfigError(f"eval.{name} must be > 0, got {getattr(ev, name)}")
        if ev.effective_gate(self.robot) != "heldout_l1" and ev.sim_task not in TASK_DEFAULTS:
            raise ConfigError(f"eval.sim_task: {ev.sim_task!r} is not a simulated task ({', '.join(TASK_DEFAULTS)}); "
                              f"the {ev.effective_gate(self.robot)} gate rolls candidates out in it")
        if self.reference not in REFERENCE_CHOICES and not VERSION_RE.match(self.reference):
            raise ConfigError(f"reference must be previous, base or a model version name like v0001, got "
                              f"{self.reference!r}")
        self._check_overrides()

    def overrides_for(self, loss: str) -> dict[str, Any]:
        """What a job of ``loss`` merges into its apo-train config: train_overrides, then loss_overrides[loss]."""
        return merge_overrides(self.train_overrides, self.loss_overrides.get(loss) or {})

    def job_train_config(self, loss: str, *, output_dir: str, policy_path: str, data_paths: list[str], k: int,
                         steps: int, reference_path: str | None = None) -> dict[str, Any]:
        """The apo-train config of a job: the job's own keys (JOB_OWNED_KEYS), then overrides_for(loss). The
        retrain job trains with it, and the start-up check loads it for every loss."""
        cfg: dict[str, Any] = {
            "output_dir": output_dir,
            "policy": {"path": policy_path},
            "data": {"paths": data_paths, "k": k},
            "loss": {"name": loss},
            "train": {"max_steps": steps, "progress_bar": False},
        }
        if reference_path is not None:
            cfg["reference"] = {"path": reference_path}
        return merge_overrides(cfg, self.overrides_for(loss))

    def _check_overrides(self) -> None:
        """Fail at start, not in a job hours later: every loss a request may name must get a config that loads
        (wrong keys, a loss refusing a setting), and no override may replace what the job itself sets."""
        from apo_trainer.config import load_train_config
        from apo_trainer.objectives import LOSS_NAMES

        for loss, overrides in self.loss_overrides.items():
            if loss not in LOSS_NAMES:
                raise ConfigError(f"loss_overrides: unknown loss {loss!r} (choose from {', '.join(LOSS_NAMES)})")
            if not isinstance(overrides, dict):
                raise ConfigError(f"loss_overrides.{loss} must be a mapping of apo-train keys, got "
                                  f"{type(overrides).__name__}")
        for where, overrides in (("train_overrides", self.train_overrides),
                                 *((f"loss_overrides.{n}", o) for n, o in self.loss_overrides.items())):
            owned = sorted(set(flatten_dotted(overrides)) & set(JOB_OWNED_KEYS))
            if owned:
                raise ConfigError(f"{where}: {', '.join(owned)} set by the job itself ("
                                  + "; ".join(f"{k}: {JOB_OWNED_KEYS[k]}" for k in owned) + ")")
        failed: dict[str, str] = {}
        for loss in LOSS_NAMES:
            try:
                load_train_config(None, overrides=self.job_train_config(
                    loss, output_dir="job/train", policy_path="models/base", data_paths=["dataset.h5"],
                    k=self.defaults.k, steps=1))
            except ConfigError as exc:
                failed[loss] = str(exc)
        if not failed:
            return
        loss, error = next(iter(failed.items()))
        if loss in self.loss_overrides:
            raise ConfigError(f"loss_overrides.{loss}: a job with loss {loss} would not load its apo-train "
                              f"config: {error}")
        loaded = [n for n in LOSS_NAMES if n not in failed]
        hint = (f" (it loads for {', '.join(loaded)}: a setting for some losses only goes in "
                f"loss_overrides.<loss>)" if loaded else "")
        raise ConfigError(f"train_overrides: a job with loss {loss} would not load its apo-train config: "
                          f"{error}{hint}")


# apo-train keys a retraining job fills in from its request and these settings; an override of one would
# silently replace the request (steps, k) or the model store's choice (base policy, reference).
JOB_OWNED_KEYS = {
    "output_dir": "the job's directory",
    "policy.path": "the version being retrained",
    "reference.path": "the reference setting",
    "data.paths": "expert_data and the converted episodes",
    "data.k": "the request's k_window or defaults.k",
    "loss.name": "the request's loss or defaults.loss",
    "train.max_steps": "the request's steps or defaults.steps",
}


def check_command_template(command: str) -> None:
    """Fail at start, not in the middle of a job, on a placeholder the job cannot fill."""
    try:
        command.format(**{name: "x" for name in COMMAND_PLACEHOLDERS})
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"backend.command: unknown placeholder {{{exc.args[0]}}} (known: "
                          f"{', '.join('{' + n + '}' for n in COMMAND_PLACEHOLDERS)}; write a literal brace as "
                          "{{ or }})") from None
    except ValueError as exc:
        raise ConfigError(f"backend.command: {exc} (write a literal brace as {{{{ or }}}})") from None


def load_retrain_settings(source=None, overrides: dict | None = None) -> RetrainSettings:
    data = read_yaml(source) if isinstance(source, (str, Path)) and str(source) else (source or {})
    if overrides:
        data = merge_overrides(data, overrides)
    return load_config(RetrainSettings, data)
