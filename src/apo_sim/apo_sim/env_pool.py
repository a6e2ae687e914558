"""Simulators in worker processes, driven in lockstep by a parent that runs the policy.

The pool holds ``size`` simulators (:class:`~apo_sim.env.SimEnv`) spread over ``processes``
worker processes (default: one per core, since a worker steps its simulators one after the other
and more processes than cores only add start-up time and memory). Each simulator is built once and
kept for every episode it is given (a soft reset costs 10-40 ms, a new environment about a second).
The parent sends ``start`` (reset with a seed) and ``step`` (one action) commands for any subset of
simulators and reads back what the policy needs: the image and proprio, plus the episode record
when it is over. The episode logic itself is :class:`~apo_sim.episode.PolicyEpisode`, the same class
the sequential evaluator uses.

Processes use the ``spawn`` start method (no forked copy of the parent's torch threads or GL
state). Workers ignore SIGINT, so Ctrl-C reaches the parent alone, which then closes the pool; they
also exit on their own when the parent's end of the pipe disappears (parent killed). A simulator
that raises sends its traceback (:class:`PoolWorkerError` in the parent); a worker that dies without
a word is reported with its pid and exit code (:class:`PoolWorkerDied`). A worker killed by a signal
before its simulators are built (a native crash in MuJoCo's or Mesa's start-up, seen once in CI as
a segfault that never came back in a rerun) is started again, up to ``CONSTRUCTION_ATTEMPTS`` times in
all, with a line on stderr; a worker that exits with an error, or dies after it is built, is never
restarted, since an episode it was running cannot be resumed silently.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait

from apo_core.errors import ApoError

START_TIMEOUT_S = 900.0  # building a SimEnv takes about a second, much more on a loaded machine
REPLY_TIMEOUT_S = 600.0
CONSTRUCTION_ATTEMPTS = 3  # starts of one worker whose process a signal killed before it was ready


class PoolWorkerError(ApoError, RuntimeError):
    """A simulator raised; the message carries its index, the command and its traceback."""


class PoolWorkerDied(ApoError, RuntimeError):
    """A worker process exited or was killed without answering."""


@dataclass
class StepReply:
    """What a simulator returns after ``start`` or ``step``."""

    image: object  # (H, W, 3) uint8, None when rendering is off
    proprio: object  # (9,)
    done: bool
    record: object | None  # EpisodeRecord once done


def _run(env, episode, cmd: tuple):
    """Execute one command on one simulator: (episode, reply)."""
    from apo_sim.episode import PolicyEpisode

    if cmd[0] == "start":
        episode = PolicyEpisode(env, *cmd[1:])
    elif cmd[0] == "step":
        if episode is None:
            raise RuntimeError("no episode started on this simulator")
        episode.apply(cmd[1])
    else:
        raise ValueError(f"unknown command {cmd[0]!r}")
    done = episode.done
    return episode, StepReply(episode.obs.image, episode.obs.proprio, done, episode.record() if done else None)


def _worker_main(conn, proc_index: int, env_indices: list[int], task: str, env_kwargs: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the pool stops
    faulthandler.enable()  # a native crash prints the Python stack it happened under
    # One thread per worker keeps the workers from oversubscribing the cores: a worker runs no torch, and
    # llvmpipe (osmesa) renders with one thread per core by default (set before any GL context exists).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = os.environ["LP_NUM_THREADS"] = "1"
    from apo_sim.env import SimEnv

    envs: dict = {}
    episodes: dict = {}
    try:
        for i in env_indices:
            envs[i] = SimEnv(task, **env_kwargs)
        conn.send(("ready", envs[env_indices[0]].instruction))
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if message == "close":
                return
            replies = {}
            for i, cmd in message.items():
                try:
                    episodes[i], reply = _run(envs[i], episodes.get(i), cmd)
                    replies[i] = ("ok", reply)
                except Exception:
                    replies[i] = ("error", f"simulator {i} (process {proc_index}) failed on {cmd[0]!r}:\n"
                                           f"{traceback.format_exc()}")
            conn.send(replies)
    except Exception:
        try:
            conn.send(("error", f"process {proc_index} (simulators {env_indices}) failed to start:\n"
                                f"{traceback.format_exc()}"))
        except (OSError, EOFError):
            pass
    finally:
        for env in envs.values():
            env.close()
        conn.close()


class EnvPool:
    """``size`` simulators in ``processes`` workers; use as a context manager (always closes)."""

    def __init__(self, size: int, task: str, env_kwargs: dict | None = None, processes: int | None = None):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = int(size)
        self.task = task
        self.instruction = ""
        n_proc = max(1, min(self.size, int(processes or os.cpu_count() or 1)))
        # simulator i lives in process i % n_proc: consecutive simulators land on different cores
        self._members = [list(range(p, self.size, n_proc)) for p in range(n_proc)]
        self._proc_of = {i: p for p, members in enumerate(self._members) for i in members}
        self._ctx = mp.get_context("spawn")
        self._env_kwargs = dict(env_kwargs or {})
        self._conns, self._procs = [], []
        try:
            for p in range(n_proc):
                conn, proc = self._start_worker(p)
                self._conns.append(conn)
                self._procs.append(proc)
            for p in range(n_proc):
                self.instruction = self._await_ready(p)
        except BaseException:
            self.close()
            raise

    def _start_worker(self, p: int):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, p, self._members[p], self.task, self._env_kwargs),
                                 name=f"apo-sim-pool-{p}", daemon=True)
        proc.start()
        child.close()  # only the worker holds this end: its death closes the pipe
        return parent, proc

    def _await_ready(self, p: int) -> str:
        """Wait for worker ``p``'s simulators; start it again if a signal killed it on the way."""
        for attempt in range(1, CONSTRUCTION_ATTEMPTS + 1):
            try:
                return self._receive(p, "construction", START_TIMEOUT_S)
            except PoolWorkerDied as exc:
                code = self._procs[p].exitcode
                if code is None or code >= 0 or attempt == CONSTRUCTION_ATTEMPTS:
                    if attempt > 1:
                        raise PoolWorkerDied(f"{exc} (start {attempt} of {CONSTRUCTION_ATTEMPTS})") from exc
                    raise
                print(f"[env-pool] {exc}; starting it again (start {attempt + 1} of {CONSTRUCTION_ATTEMPTS})",
                      file=sys.stderr, flush=True)
                self._conns[p].close()
                self._conns[p], self._procs[p] = self._start_worker(p)
        raise AssertionError("unreachable")

    @property
    def processes(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # --- commands ------------------------------------------------------------------------------
    @staticmethod
    def start_command(seed: int, max_steps: int) -> tuple:
        """Reset with ``seed`` and begin an episode of at most ``max_steps`` actions."""
        return ("start", int(seed), int(max_steps))

    @staticmethod
    def step_command(action) -> tuple:
        return ("step", action)

    def exchange(self, commands: dict[int, tuple]) -> dict[int, StepReply]:
        """Send each listed simulator its command, then collect every reply: the processes run in parallel."""
        per_proc: dict[int, dict] = {}
        for i, cmd in commands.items():
            if i not in self._proc_of:
                raise IndexError(f"no simulator {i} in a pool of {self.size}")
            per_proc.setdefault(self._proc_of[i], {})[i] = cmd
        for p, batch in per_proc.items():
            try:
                self._conns[p].send(batch)
            except (BrokenPipeError, OSError) as exc:
                raise self._died(p, "send") from exc
        out, errors = {}, []
        for p in per_proc:  # read every process's answer before raising, so the pipes stay in step
            for i, (kind, payload) in self._receive(p, "a command", REPLY_TIMEOUT_S).items():
                if kind == "ok":
                    out[i] = payload
                else:
                    errors.append(payload)
        if errors:
            raise PoolWorkerError("\n".join(errors))
        return out

    def _receive(self, p: int, what: str, timeout: float):
        conn, proc = self._conns[p], self._procs[p]
        # Wait on the pipe and the process together: a dead worker ends the wait at once.
        if not wait([conn, proc.sentinel], timeout):
            raise PoolWorkerDied(f"simulator process {p} ({self.task}) gave no answer to {what} in {timeout:.0f} s")
        if not conn.poll():
            raise self._died(p, what)
        try:
            message = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(p, what) from exc
        if isinstance(message, tuple) and message[0] == "error":
            raise PoolWorkerError(message[1])
        return message[1] if isinstance(message, tuple) else message

    def _died(self, p: int, what: str) -> PoolWorkerDied:
        proc = self._procs[p]
        proc.join(timeout=5)
        return PoolWorkerDied(f"simulator process {p} ({self.task}, pid {proc.pid}, simulators {self._members[p]}) "
                              f"died during {what} with exit code {proc.exitcode}")

    # --- lifetime ------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop, then terminate (and at last kill) any that does not."""
        for conn in self._conns:
            try:
                conn.send("close")
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + timeout
        for conn, proc in zip(self._conns, self._procs, strict=True):
            while proc.is_alive() and time.monotonic() < deadline:
                try:  # drain a reply still in flight, or a worker blocked on a full pipe never exits
                    while conn.poll():
                        conn.recv()
                except (EOFError, OSError):
                    pass
                proc.join(timeout=0.05)
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
