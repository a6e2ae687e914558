"""Simulators in worker processes, driven in lockstep by a parent that runs the policy.

Each worker builds one :class:`~apo_sim.env.SimEnv` once and keeps it for every episode it is
given (a soft reset costs 10-40 ms, a new environment about a second). The parent sends ``start``
(reset with a seed) and ``step`` (one action) commands and reads back what the policy needs: the
image and proprio, plus the episode record when it is over. The episode logic itself is
:class:`~apo_sim.episode.PolicyEpisode`, the same class the sequential evaluator uses.

Processes use the ``spawn`` start method (no forked copy of the parent's torch threads or GL
state). Workers ignore SIGINT, so Ctrl-C reaches the parent alone, which then closes the pool; they
also exit on their own when the parent's end of the pipe disappears (parent killed). A worker that
raises sends its traceback (:class:`PoolWorkerError` in the parent); one that dies without a word is
reported with its exit code (:class:`PoolWorkerDied`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait

from apo_core.errors import ApoError

START_TIMEOUT_S = 600.0  # building a SimEnv takes about a second, much more on a loaded machine
REPLY_TIMEOUT_S = 600.0


class PoolWorkerError(ApoError, RuntimeError):
    """A simulator worker raised; the message carries its index, the command and its traceback."""


class PoolWorkerDied(ApoError, RuntimeError):
    """A simulator worker exited or was killed without answering."""


@dataclass
class StepReply:
    """What a worker returns after ``start`` or ``step``."""

    image: object  # (H, W, 3) uint8
    proprio: object  # (9,)
    done: bool
    record: object | None  # EpisodeRecord once done


def _worker_main(conn, index: int, task: str, env_kwargs: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the pool stops
    # The worker runs no torch; one thread each keeps N workers from oversubscribing the cores.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    from apo_sim.env import SimEnv
    from apo_sim.episode import PolicyEpisode

    env = episode = None
    try:
        env = SimEnv(task, **env_kwargs)
        conn.send(("ready", env.instruction))
        while True:
            try:
                cmd, *args = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if cmd == "close":
                return
            try:
                if cmd == "start":
                    episode = PolicyEpisode(env, *args)
                elif cmd == "step":
                    episode.apply(args[0])
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                obs = episode.obs
                done = episode.done
                conn.send(("ok", StepReply(obs.image, obs.proprio, done, episode.record() if done else None)))
            except Exception:
                conn.send(("error", f"worker {index} failed on {cmd!r}:\n{traceback.format_exc()}"))
    except Exception:
        try:
            conn.send(("error", f"worker {index} failed to start:\n{traceback.format_exc()}"))
        except (OSError, EOFError):
            pass
    finally:
        if env is not None:
            env.close()
        conn.close()


class EnvPool:
    """``size`` worker processes, one SimEnv each; use as a context manager (always closes)."""

    def __init__(self, size: int, task: str, env_kwargs: dict | None = None):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = int(size)
        self.task = task
        self.instruction = ""
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        try:
            for i in range(self.size):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, i, task, dict(env_kwargs or {})),
                                   name=f"apo-sim-pool-{i}", daemon=True)
                proc.start()
                child.close()  # only the worker holds this end: its death closes the pipe
                self._conns.append(parent)
                self._procs.append(proc)
            for i in range(self.size):
                self.instruction = self._receive(i, "construction", START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    # --- commands ------------------------------------------------------------------------------
    @staticmethod
    def start_command(seed: int, max_steps: int) -> tuple:
        """Reset with ``seed`` and begin an episode of at most ``max_steps`` actions."""
        return ("start", int(seed), int(max_steps))

    @staticmethod
    def step_command(action) -> tuple:
        return ("step", action)

    def exchange(self, commands: dict[int, tuple]) -> dict[int, StepReply]:
        """Send each listed worker its command, then collect every reply: the workers run in parallel."""
        for i, cmd in commands.items():
            try:
                self._conns[i].send(cmd)
            except (BrokenPipeError, OSError) as exc:
                raise self._died(i, cmd[0]) from exc
        return {i: self._receive(i, cmd[0], REPLY_TIMEOUT_S) for i, cmd in commands.items()}

    def _receive(self, i: int, what: str, timeout: float):
        conn, proc = self._conns[i], self._procs[i]
        # Wait on the pipe and the process together: a dead worker ends the wait at once.
        if not wait([conn, proc.sentinel], timeout):
            raise PoolWorkerDied(f"simulator worker {i} ({self.task}) gave no answer to {what!r} in {timeout:.0f} s")
        if not conn.poll():
            raise self._died(i, what)
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(i, what) from exc
        if kind == "error":
            raise PoolWorkerError(payload)
        return payload

    def _died(self, i: int, what: str) -> PoolWorkerDied:
        proc = self._procs[i]
        proc.join(timeout=5)
        return PoolWorkerDied(f"simulator worker {i} ({self.task}, pid {proc.pid}) died during {what!r} "
                              f"with exit code {proc.exitcode}")

    # --- lifetime ------------------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def close(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop, then terminate (and at last kill) any that does not."""
        for conn in self._conns:
            try:
                conn.send(("close",))
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
