"""Start a resolved graph without ros2 launch: each node its own process, output prefixed with its
name, signals forwarded, clean shutdown in reverse start order (SIGINT, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from apo_bringup.graph import NodeSpec


def ros_args_for(spec: NodeSpec, params_dir: Path) -> list[str]:
    """``--ros-args`` for a node: its name, a parameter file, remappings."""
    params_file = params_dir / f"{spec.name}.params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": spec.parameters}}, sort_keys=False))
    args = ["--ros-args", "-r", f"__node:={spec.name}", "--params-file", str(params_file)]
    for src, dst in spec.remappings.items():
        args += ["-r", f"{src}:={dst}"]
    return args


@dataclass
class RunningNode:
    spec: NodeSpec
    proc: subprocess.Popen
    pump: threading.Thread


class GraphRunner:
    def __init__(self, specs: list[NodeSpec], log_dir: Path | None = None, shutdown_timeout: float = 10.0,
                 echo: bool = True, env: dict | None = None):
        self.specs = specs
        self.shutdown_timeout = shutdown_timeout
        self.echo = echo
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="apo-graph-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.running: list[RunningNode] = []
        self._stopping = threading.Event()
        self.failed: list[tuple[str, int]] = []

    def start(self) -> None:
        for spec in self.specs:
            cmd = [sys.executable, "-u", "-m", spec.module, *ros_args_for(spec, self.log_dir)]
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, bufsize=1, text=True, errors="replace")
            pump = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
            pump.start()
            self.running.append(RunningNode(spec, proc, pump))
            self._say(f"started {spec.name} (pid {proc.pid}): python -m {spec.module}")

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        with open(self.log_dir / f"{name}.log", "w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if self.echo:
                    sys.stdout.write(f"[{name}] {line}")
                    sys.stdout.flush()

    def _say(self, text: str) -> None:
        if self.echo:
            print(f"[apo] {text}", flush=True)

    def poll(self) -> str | None:
        """Name of a required node that has exited, if any (and record every exit)."""
        for node in self.running:
            code = node.proc.poll()
            if code is not None and (node.spec.name, code) not in self.failed and not self._stopping.is_set():
                self.failed.append((node.spec.name, code))
                self._say(f"{node.spec.name} exited with code {code}; log: {self.log_dir / (node.spec.name + '.log')}")
                if node.spec.required:
                    return node.spec.name
        return None

    def wait(self, duration: float | None = None, until=None, interval: float = 0.2) -> str:
        """Block until a required node exits, ``until()`` is true, or ``duration`` passes."""
        deadline = None if duration is None else time.monotonic() + duration
        while True:
            dead = self.poll()
            if dead:
                return f"required node {dead} exited"
            if until is not None and until():
                return "done"
            if deadline is not None and time.monotonic() >= deadline:
                return "duration reached"
            time.sleep(interval)

    def stop(self) -> dict[str, int]:
        """Stop every node in reverse order; returns exit codes."""
        self._stopping.set()
        codes = {}
        for node in reversed(self.running):
            codes[node.spec.name] = _stop_process(node.proc, self.shutdown_timeout)
        for node in self.running:
            node.pump.join(timeout=2.0)
        return codes

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _stop_process(proc: subprocess.Popen, timeout: float) -> int:
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def install_signal_forwarding(stop_event: threading.Event) -> None:
    """SIGINT/SIGTERM to the runner set ``stop_event`` (the main loop then stops the graph)."""

    def handler(signum, frame):
        stop_event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
