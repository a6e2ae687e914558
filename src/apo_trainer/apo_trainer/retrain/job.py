"""One retraining job and the manager that admits, runs, cancels and reports jobs.

A job: stage the new episode bags (every n-th held out for evaluation) -> convert them into the
round's datasets (``apo-convert``, incremental) -> train from the deployed version on expert + all
interactive data (``apo-train`` through a backend: local subprocess / torchrun, or any command over
shared storage) -> evaluate the candidate against the deployed version (held-out action L1, optional
success rate in simulation through the caller's ``sim_evaluator``, whichever ``eval.gate`` decides) -> promote it to a new numbered version in
the model store, or reject it (state ``rejected``).

Promotion is the only step that changes what is deployed, and it is atomic (ModelStore.add): a job
that fails, is cancelled, or is killed at any point leaves the deployed version as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from apo_core.bag_contract import RETRAIN_ACTIVE_STATES, RETRAIN_STATES
from apo_core.errors import ApoError, ConfigError
from apo_core.model_store import ModelStore, ModelStoreError
from apo_core.names import JOB_ID_RE, VERSION_RE, InvalidNameError, check_name, child_path
from apo_trainer.retrain.requests import LOSSES, check_request  # noqa: F401 (LOSSES: re-exported, was defined here)
from apo_trainer.retrain.settings import RetrainSettings

# apo_interfaces/RetrainStatus.STATE_* by name, and the states of a running job (apo_core.bag_contract).
STATES = RETRAIN_STATES
ACTIVE = RETRAIN_ACTIVE_STATES


# The job's status carries this (every message of the job ends with it) when no expert data is configured.
NO_EXPERT_DATA_WARNING = (
    "no expert demonstrations: expert_data is empty, so this round trains on the interactive episodes alone "
    "(the desirable share of each batch is the policy's own autonomous and corrected steps; APO mixes the "
    "expert demonstrations into every round). Set expert_data (apo deploy expert_data:=<demos.h5>, or the "
    "retrain settings file)")


class JobCancelled(Exception):
    pass


class CandidateRejected(Exception):
    """The promotion gate kept the deployed version (the message says which figures decided)."""


def with_warnings(message: str, warnings: list[str]) -> str:
    return message + "".join(f" [WARNING: {w}]" for w in warnings)


@dataclass
class RetrainRequest:
    episodes: list[str] = field(default_factory=list)
    loss: str = ""
    steps: int = 0
    k: int = -1
    dry_run: bool = False


@dataclass
class JobStatus:
    job_id: str = ""
    state: str = "idle"
    progress: float = 0.0
    message: str = ""
    base_version: str = ""
    candidate_version: str = ""
    deployed_version: str = ""
    metrics: dict = field(default_factory=dict)
    train_episodes: list[str] = field(default_factory=list)
    heldout_episodes: list[str] = field(default_factory=list)
    request: dict = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    reference_version: str = ""  # APO's reference policy of this round (settings.reference)
    warnings: list[str] = field(default_factory=list)  # also appended to every message

    @property
    def state_code(self) -> int:
        return STATES[self.state]


class EpisodeRegistry:
    """Which episode bags earlier rounds used (for training or held out), persisted as JSON."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"train": {}, "heldout": {}}

    def used(self) -> set[str]:
        return set(self.data["train"]) | set(self.data["heldout"])

    def record(self, train: list[str], heldout: list[str], version: str) -> None:
        for ep in train:
            self.data["train"][ep] = version
        for ep in heldout:
            self.data["heldout"][ep] = version
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def is_heldout(episode_id: str, every: int) -> bool:
    """Deterministic hold-out: the same episode is always on the same side, whichever job sees it."""
    if every <= 0:
        return False
    return int(hashlib.sha1(episode_id.encode()).hexdigest()[:8], 16) % every == 0


class RetrainManager:
    """``sim_evaluator``: ``(policy_dir, *, task, episodes, seed, max_steps) -> success rate`` for the
    simulated promotion gate (see retrain/evaluate.py); None: no simulator here, so eval.gate
    sim_success_rate / both is a configuration error and auto means heldout_l1."""

    def __init__(self, settings: RetrainSettings, on_update=None, on_promoted=None, sim_evaluator=None):
        if sim_evaluator is not None and not callable(sim_evaluator):
            raise ConfigError(f"sim_evaluator must be a callable returning a success rate, got {sim_evaluator!r}")
        if sim_evaluator is None and settings.eval.gate in ("sim_success_rate", "both"):
            raise ConfigError(f"eval.gate {settings.eval.gate} rolls candidates out in a simulator, but this retrain "
                              "manager was given no sim_evaluator (the trainer imports no simulator: the retrain "
                              "node passes apo_retrain.sim_gate.sim_success_rate); use eval.gate heldout_l1 or auto")
        self.settings = settings
        self.sim_evaluator = sim_evaluator
        self.work_dir = Path(settings.work_dir)
        self.jobs_dir = self.work_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(settings.model_store)
        self.registry = EpisodeRegistry(self.work_dir / "episodes_used.json")
        self._on_update = on_update or (lambda status: None)
        self._on_promoted = on_promoted or (lambda version: None)
        self._lock = threading.Lock()
        self._current: _Job | None = None
        self._latest: JobStatus = JobStatus(deployed_version=self.store.current_version() or "")
        self._mark_interrupted_jobs()

    # --- queries -----------------------------------------------------------------------------
    def new_episodes(self) -> list[str]:
        bags = Path(self.settings.bags_dir)
        if not bags.is_dir():
            return []
        from apo_core.bags import is_bag_dir

        used = self.registry.used()
        return sorted(p.name for p in bags.iterdir() if is_bag_dir(p) and p.name not in used)

    def status(self, job_id: str = "") -> JobStatus | None:
        """Status of ``job_id`` ("" = the latest job); None if unknown, InvalidNameError if malformed."""
        if job_id:
            check_name(job_id, "job id", JOB_ID_RE)
        with self._lock:
            if not job_id or job_id == self._latest.job_id:
                return self._latest
        path = child_path(self.jobs_dir, job_id, "job id", JOB_ID_RE) / "status.json"
        if not path.is_file():
            return None
        try:
            status = JobStatus(**json.loads(path.read_text()))
            if status.state not in STATES:
                raise ValueError(f"unknown state {status.state!r}")
            return status
        except (OSError, ValueError, TypeError) as exc:
            return JobStatus(job_id=job_id, state="failed", message=f"status file {path} is unreadable: {exc}")

    def deployed_version(self) -> str:
        """The store's current version for a report; "" when there is none or its pointer is damaged
        (ModelStore refuses a ``current`` link that leaves versions/)."""
        try:
            return self.store.current_version() or ""
        except ModelStoreError:
            return ""

    @property
    def running(self) -> bool:
        with self._lock:
            return self._current is not None and self._current.status.state in ACTIVE

    # --- commands ----------------------------------------------------------------------------
    def submit(self, request: RetrainRequest) -> tuple[bool, str, str]:
        """(accepted, job_id, reason). Answers at once; the job runs on its own thread."""
        base = self.store.current_version() or ""
        with self._lock:
            if self._current is not None and self._current.status.state in ACTIVE:
                return False, "", f"job {self._current.status.job_id} is already running ({self._current.status.state})"
        d = self.settings.defaults
        try:
            checked = check_request(request, self.settings.bags_dir, d.loss, d.steps, d.k)
        except ApoError as exc:  # the reason names the field and the limit
            return False, "", str(exc)
        loss = checked.loss
        if not base:
            return False, "", f"model store {self.store.root} has no deployed version to start from"
        try:
            reference = self._reference_version(base)
        except ApoError as exc:
            return False, "", f"reference policy {self.settings.reference!r}: {exc}"
        if checked.episodes is not None:
            episodes = checked.episodes
        else:
            episodes = self.new_episodes()
            if len(episodes) < self.settings.min_new_episodes:
                return False, "", (f"nothing new to train on: {len(episodes)} new episode bag(s) in "
                                   f"{self.settings.bags_dir} (need {self.settings.min_new_episodes}); "
                                   f"{len(self.registry.used())} were used by earlier versions")
        every = self.settings.eval.heldout_every
        heldout = [e for e in episodes if is_heldout(e, every)]
        train = [e for e in episodes if e not in heldout] or episodes
        heldout = [e for e in heldout if e not in train]
        job_id = time.strftime("job-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        warnings = [] if self.settings.expert_data else [NO_EXPERT_DATA_WARNING]
        status = JobStatus(job_id=job_id, state="queued", base_version=base, deployed_version=base,
                           train_episodes=train, heldout_episodes=heldout, request=asdict(request),
                           started=time.time(), reference_version=reference, warnings=warnings,
                           message=with_warnings(f"{len(train)} training + {len(heldout)} held-out episode(s), "
                                                 f"loss {loss}, reference {reference}", warnings))
        job = _Job(self, status, loss, checked.steps, checked.k, bool(request.dry_run))
        with self._lock:
            self._current = job
            self._latest = status
        reply = status.message  # read before the job's thread moves on to its next message
        job.start()
        return True, job_id, reply

    def cancel(self, job_id: str = "") -> tuple[bool, str]:
        if job_id:
            try:
                check_name(job_id, "job id", JOB_ID_RE)
            except InvalidNameError as exc:
                return False, str(exc)
        with self._lock:
            job = self._current
        if job is None or job.status.state not in ACTIVE:
            return False, "no job is running"
        if job_id and job_id != job.status.job_id:
            return False, f"job {job_id} is not the running job ({job.status.job_id})"
        job.cancel()
        return True, f"cancelling {job.status.job_id}"

    def rollback(self, version: str = "") -> tuple[bool, str, str]:
        if self.running:
            return False, "a retrain job is running; cancel it first", self.deployed_version()
        try:
            if version:  # a version name from a request: a plain vNNNN inside versions/, nothing else
                child_path(self.store.versions_dir, version, "version", VERSION_RE, must_exist=True)
            new = self.store.rollback(version or None)
        except Exception as exc:
            return False, str(exc), self.deployed_version()
        with self._lock:
            self._latest.deployed_version = new
        try:
            self._on_promoted(new)
        except Exception as exc:
            return True, f"deployed version is now {new} (the running policy was not told: {exc})", new
        return True, f"deployed version is now {new}", new

    def wait(self, timeout: float | None = None) -> JobStatus:
        with self._lock:
            job = self._current
        if job is not None:
            job.thread.join(timeout)
        return self._latest

    # --- internals ---------------------------------------------------------------------------
    def _reference_version(self, base: str) -> str:
        """The version APO's reference log-probs come from this round (settings.reference)."""
        ref = self.settings.reference
        if ref == "previous":
            return base
        if ref == "base":
            versions = self.store.versions()
            return versions[0] if versions else base
        self.store.path(ref)  # a version name: it must exist
        return ref

    def _publish(self, status: JobStatus) -> None:
        path = self.jobs_dir / status.job_id / "status.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(status), indent=1))
        os.replace(tmp, path)
        try:
            self._on_update(status)
        except Exception:  # a listener's failure (e.g. ROS shutting down) must not change the job's outcome
            pass

    def _mark_interrupted_jobs(self) -> None:
        for path in self.jobs_dir.glob("*/status.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if data.get("state") in ACTIVE:
                data.update(state="failed", message="interrupted: the retrain service stopped during this job; "
                            "the deployed version was not changed", finished=time.time())
                path.write_text(json.dumps(data, indent=1))


class _Job:
    def __init__(self, manager: RetrainManager, status: JobStatus, loss: str, steps: int, k: int, dry_run: bool):
        self.m = manager
        self.s = manager.settings
        self.status = status
        self.loss, self.steps, self.k, self.dry_run = loss, steps, k, dry_run
        self.dir = manager.jobs_dir / status.job_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cancel = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._proc_lock = threading.Lock()
        self._gate_result = "no promotion gate ran"
        self.thread = threading.Thread(target=self._run, name=f"retrain-{status.job_id}", daemon=True)

    def start(self):
        self.m._publish(self.status)
        self.thread.start()

    def cancel(self):
        self._cancel.set()
        with self._proc_lock:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    os.killpg(self._proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def _set(self, state: str | None = None, progress: float | None = None, message: str | None = None, **metrics):
        if state:
            self.status.state = state
        if progress is not None:
            self.status.progress = float(progress)
        if message is not None:
            self.status.message = with_warnings(message, self.status.warnings)
        self.status.metrics.update(metrics)
        self.m._publish(self.status)

    def _check_cancel(self):
        if self._cancel.is_set():
            raise JobCancelled()

    def _run(self):
        try:
            if self.dry_run:
                self._set("succeeded", 1.0, f"dry run: would train {self.loss} for {self.steps} steps with K={self.k} "
                          f"on {len(self.status.train_episodes)} new episode(s) (+ {len(self.status.heldout_episodes)} "
                          f"held out) from {self.status.base_version}")
                return
            data = self._convert()
            candidate = self._train(data)
            self._evaluate(candidate)
            self._promote(candidate)
        except JobCancelled:
            self._set("cancelled", message=f"cancelled; deployed version unchanged ({self.m.deployed_version()})")
        except CandidateRejected as exc:
            self._set("rejected", message=f"candidate rejected by the promotion {exc}; deployed version unchanged "
                                          f"({self.m.deployed_version()})")
        except Exception as exc:  # any failure: report it, never touch the deployed version
            self._set("failed", message=f"{type(exc).__name__}: {exc}; deployed version unchanged "
                                       f"({self.m.deployed_version()})")
        finally:
            self.status.finished = time.time()
            self.status.deployed_version = self.m.deployed_version()
            self.m._publish(self.status)

    # --- phases ------------------------------------------------------------------------------
    def _stage(self, name: str, episodes: list[str]) -> Path:
        stage = self.dir / name
        stage.mkdir(exist_ok=True)
        for ep in episodes:
            link = stage / ep
            if not link.exists():
                os.symlink(Path(self.s.bags_dir).resolve() / ep, link)
        return stage

    def _convert(self) -> dict:
        self._set("converting", 0.02, "converting episode bags")
        data_dir = self.m.work_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        out = {"train": data_dir / "interactive.h5", "heldout": data_dir / "heldout.h5"}
        for split, episodes in (("train", self.status.train_episodes), ("heldout", self.status.heldout_episodes)):
            if not episodes:
                continue
            stage = self._stage(f"bags_{split}", episodes)
            report_path = self.dir / f"convert_{split}.json"
            # apo-convert exits 1 when some bags could not be used and converts the rest: one bad episode
            # (e.g. recorded without images) must not fail this job and every later one.
            self._run_logged([sys.executable, "-m", "apo_trainer.convert", str(stage), str(out[split]),
                              "--k", str(self.k), "--report-json", str(report_path)], f"convert_{split}.log",
                             ok_codes=(0, 1))
            self._check_cancel()
            self._note_unusable_bags(split, report_path)
            if not out[split].is_file():
                if split == "train":
                    raise RuntimeError(f"none of the {len(episodes)} training episode bag(s) could be converted "
                                       f"(see {self.dir / 'convert_train.log'})")
                del out[split]
        self._set(progress=0.1)
        return out

    def _note_unusable_bags(self, split: str, report_path: Path) -> None:
        """Bags the converter could not use become a warning on every later message of this job."""
        try:
            bags = json.loads(report_path.read_text()).get("bags", [])
        except (OSError, ValueError) as exc:
            self.status.warnings.append(f"conversion report {report_path} unreadable: {exc}")
            return
        failed = [b for b in bags if b.get("status") == "failed"]
        if not failed:
            return
        names = ", ".join(f"{Path(b.get('bag', '?')).name} ({b.get('error') or 'unusable'})" for b in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        self.status.warnings.append(f"{len(failed)} {split} episode bag(s) skipped as unusable: {names}{more}")
        self.status.metrics[f"{split}_bags_skipped"] = float(len(failed))
        self._set(message=f"converted {split} episodes; {len(failed)} unusable bag(s) skipped")

    def _train_config(self, data: dict) -> dict:
        reference = self.status.reference_version
        return self.s.job_train_config(
            self.loss, output_dir=str(self.dir / "train"), policy_path=str(self.m.store.path(self.status.base_version)),
            data_paths=([self.s.expert_data] if self.s.expert_data else []) + [str(data["train"])], k=self.k,
            steps=self.steps,
            reference_path=(str(self.m.store.path(reference))
                            if reference and reference != self.status.base_version else None))

    def _train(self, data: dict) -> Path:
        cfg = self._train_config(data)
        cfg_path = self.dir / "train_config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self._set("training", 0.1, f"training {self.loss} for {self.steps} steps from {self.status.base_version} "
                                   f"(reference {self.status.reference_version or self.status.base_version})")
        cmd, shell = self._backend_command(cfg_path, Path(cfg["output_dir"]))
        self._run_logged(cmd, "train.log", shell=shell, progress=lambda: self._train_progress(Path(cfg["output_dir"])))
        from apo_trainer.retrain.evaluate import find_trained_policy

        return find_trained_policy(Path(cfg["output_dir"]))

    def _backend_command(self, cfg_path: Path, output_dir: Path):
        b = self.s.backend
        if b.kind == "command":
            # /bin/sh parses the line: every value goes in quoted, so a path holding $(...), `...`, ';' or
            # a space stays one literal argument instead of running as code
            values = {"config": cfg_path, "output_dir": output_dir, "job_id": self.status.job_id,
                      "work_dir": self.m.work_dir, "python": sys.executable, "nproc": b.nproc}
            return b.command.format(**{k: shlex.quote(str(v)) for k, v in values.items()}), True
        if b.nproc > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={b.nproc}",
                    "-m", "apo_trainer.train", "--config", str(cfg_path)], False
        return [sys.executable, "-m", "apo_trainer.train", "--config", str(cfg_path)], False

    def _train_progress(self, output_dir: Path) -> None:
        from apo_trainer.retrain.evaluate import last_logged_step

        step = last_logged_step(output_dir)
        if step is not None:
            self._set(progress=0.1 + 0.75 * min(1.0, step / max(1, self.steps)))

    def _evaluate(self, candidate: Path) -> None:
        """Measure the candidate against the deployed version and apply the promotion gate: the held-out
        action L1 whenever there are held-out episodes (it decides under heldout_l1 / both, else it is
        only reported), the simulated success rates when the gate uses them."""
        from apo_trainer.retrain.evaluate import torch_threads

        with torch_threads(self.s.eval.torch_threads):
            self._measure_and_gate(candidate)

    def _measure_and_gate(self, candidate: Path) -> None:
        from apo_trainer.retrain.evaluate import compare_heldout_l1, compare_success_rates, promotion_decision

        ev = self.s.eval
        gate = ev.effective_gate(self.s.robot, simulator=self.m.sim_evaluator is not None)
        self._set("evaluating", 0.86, f"evaluating the candidate against the deployed version (gate {gate})",
                  promotion_gate=gate)
        heldout = self.m.work_dir / "data" / "heldout.h5"
        base_dir = self.m.store.path(self.status.base_version)
        l1 = success = None
        if heldout.is_file():
            l1 = compare_heldout_l1(base_dir, candidate, heldout, self.k)
            self._set(heldout_l1_base=l1[0], heldout_l1_candidate=l1[1])
        self._check_cancel()
        if gate in ("sim_success_rate", "both"):
            self._set(progress=0.9, message=f"rolling the candidate and the deployed version out in simulation "
                                            f"({ev.sim_task}, {ev.sim_episodes} episodes each)")
            success = compare_success_rates(base_dir, candidate, ev, self.m.sim_evaluator)
            self._set(success_rate_base=success[0], success_rate_candidate=success[1])
        self._check_cancel()
        promote, why = promotion_decision(gate, ev, l1, success)
        if not promote:
            raise CandidateRejected(why)
        self._gate_result = why

    def _promote(self, candidate: Path) -> None:
        self._set("promoting", 0.97, "promoting the candidate")
        self._check_cancel()
        version = self.m.store.add(candidate, make_current=True,
                                   note={"job": self.status.job_id, "base": self.status.base_version,
                                         "loss": self.loss, "steps": self.steps, "k": self.k,
                                         "metrics": self.status.metrics})
        self.m.registry.record(self.status.train_episodes, self.status.heldout_episodes, version)
        self.status.candidate_version = version
        self.status.deployed_version = version
        self._set("succeeded", 1.0, f"promoted {version} (from {self.status.base_version}; "
                                    f"{self._gate_result})")
        try:
            self.m._on_promoted(version)  # e.g. ask the policy node to load it; the promotion stands regardless
        except Exception as exc:
            self.status.message += f"; the running policy was not told to load it: {exc}"

    # --- subprocesses ------------------------------------------------------------------------
    def _run_logged(self, cmd, log_name: str, shell: bool = False, progress=None, ok_codes=(0,)) -> None:
        log_path = self.dir / log_name
        env = {**os.environ, **self.s.backend.env}
        with open(log_path, "w") as log:
            with self._proc_lock:
                self._check_cancel()
                self._proc = subprocess.Popen(cmd, shell=shell, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True)
            while self._proc.poll() is None:
                if progress is not None:
                    progress()
                time.sleep(0.5)
        code = self._proc.returncode
        self._check_cancel()
        if code not in ok_codes:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"{log_name.split('.')[0]} exited with code {code} (log {log_path}):\n"
                               + "\n".join(tail))
