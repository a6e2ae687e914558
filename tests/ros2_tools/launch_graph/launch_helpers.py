"""Helpers of the launch_pytest files here (run under pytest 7.4.4 by ../test_ros2_workspace.py): the README's
lines, shell commands through files (not pipes), polling, `ros2 topic echo` stopped with Ctrl-C, the
ros2 daemon."""

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from launch.actions import ExecuteProcess, RegisterEventHandler
from launch.event_handlers import OnProcessIO

from launch import LaunchDescription

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
UP_TIMEOUT_S = 240  # first start of the graph's Python nodes (torch, MuJoCo) on a loaded 2-core machine


def readme_lines(prefix: str) -> list[str]:
    """The README's shell lines starting with ``prefix``, as written (so these tests follow the README)."""
    lines = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith(prefix)]
    assert lines, f"README.md has no line starting with {prefix!r}"
    return lines


def readme_launch_command(**overrides: str) -> list[str]:
    """The README's `ros2 launch apo_bringup deploy.launch.py` line with some of its arguments replaced."""
    (line,) = readme_lines("ros2 launch apo_bringup deploy.launch.py")
    words = shlex.split(line, comments=True)
    args = dict(word.split(":=", 1) for word in words[4:])
    args.update(overrides)
    return words[:4] + [f"{name}:={value}" for name, value in args.items()]


def sh(cmd: str | list[str], timeout: float = 120, check: bool = True) -> str:
    """Run a command or one shell line (a README line verbatim, comments and quotes included); its output.
    Output goes through a file, not a pipe: a process it leaves behind (the ros2 daemon) cannot hold it open."""
    argv = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
    with tempfile.TemporaryFile(mode="w+") as out:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
        out.seek(0)
        text = out.read()
    assert not check or done.returncode == 0, f"`{cmd}` exited {done.returncode}:\n{text}"
    return text


def poll(what: str, check, output: list[str], timeout: float = UP_TIMEOUT_S, every: float = 2.0):
    """Call ``check`` until it returns something truthy; fail with ``what``, its last value and the end of
    the launch's ``output``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not seen within {timeout:.0f} s; last: {last!r}\nlaunch output:\n{''.join(output)[-6000:]}")


class Echo:
    """A `ros2 topic echo` in its own process group, stopped with Ctrl-C as a person would."""

    def __init__(self, line: str):
        self.out = tempfile.NamedTemporaryFile(mode="w+", suffix=".echo")
        self.proc = subprocess.Popen(["bash", "-c", line], stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return Path(self.out.name).read_text(errors="replace")

    def stop(self) -> str:
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=60)
        text = self.text()
        self.out.close()
        return text


@pytest.fixture(scope="module", autouse=True)
def ros2_daemon():
    # `ros2 topic echo` / `ros2 service call` start a daemon for this ROS_DOMAIN_ID when none runs; start it
    # here, detached from every pipe, and stop it at the end
    subprocess.run(["ros2", "daemon", "start"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    yield
    subprocess.run(["ros2", "daemon", "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def stop_with_ctrl_c(process_action, output: list[str], nodes: list[str]) -> None:
    """Ctrl-C in a terminal: SIGINT to the launch's whole process group (launch and every node at once); every
    node must finish cleanly, with no traceback, and `ros2 launch` exit 0."""
    os.killpg(process_action.process_details["pid"], signal.SIGINT)
    poll("ros2 launch exiting after Ctrl-C", lambda: process_action.return_code is not None or None, output,
         timeout=180, every=1.0)
    out = "".join(output)
    lost = lost_exit_statuses(out)
    died = [line for line in out.splitlines() if "process has died" in line and not any(
        f"[pid {pid}, exit code 255," in line for pid in lost)]
    assert not died, "\n".join(died) + "\n" + out[-6000:]
    assert "Traceback" not in out, out[-8000:]
    assert out.count("process has finished cleanly") == len(nodes) - len(lost), out[-6000:]
    assert process_action.return_code == 0, out[-6000:]


def lost_exit_statuses(out: str) -> set[str]:
    """Pids whose exit status asyncio lost. Under heavy load a node's process can be reaped by the subprocess
    transport's own poll() before asyncio's child-watcher thread waits for it; the watcher then logs "Unknown
    child process pid N, will report returncode 255" and launch reports a death with that made-up code. The
    node's real status is unknown, not a failure: its own log and the traceback check still speak for it."""
    return set(re.findall(r"Unknown child process pid (\d+), will report returncode 255", out))


def terminal_launch(cmd: list[str], name: str) -> ExecuteProcess:
    """``cmd`` (a `ros2 launch` line) as a person starts it in a terminal: setsid gives it its own process
    group, like a foreground job, so Ctrl-C reaches every node."""
    return ExecuteProcess(cmd=["setsid", *cmd], name=name, output="screen", sigterm_timeout="60",
                          sigkill_timeout="60")


def captured_launch(proc: ExecuteProcess, output: list[str]) -> LaunchDescription:
    """The launch description of a launch_pytest fixture: ``proc`` started, everything it prints appended
    to ``output``, then ready to test."""
    import launch_pytest

    def keep(event):
        output.append(event.text.decode(errors="replace"))
    return LaunchDescription([
        RegisterEventHandler(OnProcessIO(target_action=proc, on_stdout=keep, on_stderr=keep)),
        proc,
        launch_pytest.actions.ReadyToTest(),
    ])
