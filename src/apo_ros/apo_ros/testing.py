"""Helpers only tests and benchmarks use: node processes started and stopped (and RosGraph, re-exported)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from apo_ros.graph import RosGraph

__all__ = ["RosGraph", "start_node_process", "stop_process"]


def start_node_process(module: str, args: list[str] | None = None, env: dict | None = None,
                       log_path: str | None = None) -> subprocess.Popen:
    """Start ``python -m module args...`` as its own process group (for kill tests)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", module, *(args or [])], env=full_env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(5)
    return proc.returncode
