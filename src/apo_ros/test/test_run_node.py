"""apo_ros.run_node in a real process: exit 2 with a clear message on a bad parameter; SIGINT, then a
second SIGINT during shutdown -> the shutdown completes, exit 0, no traceback."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

DEMO = Path(__file__).with_name("_demo_node.py")


def _run(*ros_args, timeout=60):
    return subprocess.run([sys.executable, str(DEMO), "--ros-args", *ros_args], capture_output=True,
                          text=True, timeout=timeout)


def test_unknown_parameter_exits_2_naming_it():
    proc = _run("-p", "rat_hz:=5.0")
    assert proc.returncode == 2, proc.stderr
    assert "apo_ros_demo: error:" in proc.stderr
    assert "rat_hz" in proc.stderr and "did you mean 'rate_hz'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mistyped_parameter_exits_2():
    proc = _run("-p", "rate_hz:=fast")
    assert proc.returncode == 2, proc.stderr
    assert "rate_hz" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_ros_arguments_exit_2():
    proc = _run("-p", "rate_hz:=")
    assert proc.returncode == 2, proc.stderr
    assert "apo_ros_demo: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_build_failure_after_a_stop_signal_is_a_clean_stop():
    """A signal to the process group while a node starts can kill a helper the build waits on (a
    simulator's subprocess); that failure is the stop the user asked for, not a crash."""
    proc = subprocess.run([sys.executable, str(DEMO), "--no-interrupt-build", "--ros-args",
                           "-p", "fail_after_signal:=true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stopped while starting" in proc.stderr and "helper process died" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_failure_without_a_signal_keeps_its_traceback():
    proc = subprocess.run([sys.executable, str(DEMO), "--no-interrupt-build", "--ros-args",
                           "-p", "fail_after_signal:=true", "-p", "rate_hz:=10.0"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "APO_DEMO_NO_SIGNAL": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "helper process died" in proc.stderr


def _wait_line(lines: queue.Queue, want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=0.2).strip() == want:
                return
        except queue.Empty:
            pass
    raise AssertionError(f"no {want!r} line within {timeout} s")


def test_second_sigint_during_shutdown_is_ignored():
    proc = subprocess.Popen([sys.executable, str(DEMO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    out: list[str] = []

    def read():
        for line in proc.stdout:
            out.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _wait_line(lines, "spinning", 60)
        os.kill(proc.pid, signal.SIGINT)
        _wait_line(lines, "shutting down", 20)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C again while on_shutdown runs
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    reader.join(5)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "shutdown done" in "".join(out)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_a_sigint_after_shutdown_while_the_process_exits_is_ignored():
    # a terminal's Ctrl-C reaches the node and launch at once; launch forwards it as a second SIGINT,
    # which can arrive after run_node returned
    proc = subprocess.Popen([sys.executable, str(DEMO), "--linger", "--ros-args", "-p", "shutdown_seconds:=0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        _wait_line(lines, "spinning", 60)
        os.kill(proc.pid, signal.SIGINT)
        _wait_line(lines, "exiting", 20)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
