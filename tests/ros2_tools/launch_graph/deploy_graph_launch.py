"""launch_pytest: the deploy graph as the README starts it (`ros2 launch apo_bringup deploy.launch.py ...`),
checked with the README's own `ros2` lines, then stopped with Ctrl-C.

Not collected by the main suite (launch_pytest does not load under pytest >= 8.4, ros2/launch#947):
tests/ros2_tools/test_ros2_workspace.py runs this file with `python -m pytest` under pytest 7.4.4, with
the ROS 2 tools and a colcon install of the workspace sourced, from a directory holding the test's
model store (runs/models) and retrain settings (APO_TEST_RETRAIN_CONFIG). Tests run in file order
against one launch (module scope).
"""

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import launch_pytest
import pytest
from launch.actions import ExecuteProcess, RegisterEventHandler
from launch.event_handlers import OnProcessIO

from launch import LaunchDescription

README = Path(__file__).resolve().parents[3] / "README.md"
# config/deploy.yaml's nodes for robot:=sim, operator scripted, record and retrain on
NODES = ["/apo_sim", "/apo_policy", "/apo_arbiter", "/apo_scripted_operator", "/apo_joy_teleop", "/apo_recorder",
         "/apo_retrain"]
TOPICS = ["/apo/command", "/apo/policy_action", "/apo/step", "/apo/retrain/status", "/diagnostics"]
UP_TIMEOUT_S = 240  # first start of 7 Python nodes (torch, MuJoCo) on a loaded 2-core machine
OUTPUT: list[str] = []  # everything `ros2 launch` printed


def readme_lines(prefix: str) -> list[str]:
    """The README's shell lines starting with ``prefix``, as written (so this test follows the README)."""
    lines = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith(prefix)]
    assert lines, f"README.md has no line starting with {prefix!r}"
    return lines


def launch_command() -> list[str]:
    """The README's `ros2 launch` line with the simulated arm and the test's store and settings."""
    (line,) = readme_lines("ros2 launch apo_bringup deploy.launch.py")
    words = shlex.split(line, comments=True)
    args = dict(word.split(":=", 1) for word in words[4:])
    # robot:=sim task:=Lift (the simulated arm); short episodes so one is recorded soon; the test's
    # store (made by `apo models import`) and retrain settings (cheap jobs, no simulated gate)
    args.update(robot="sim", task="Lift", model_path="runs/models", max_episode_steps="30",
                retrain_config=os.environ["APO_TEST_RETRAIN_CONFIG"])
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


def poll(what: str, check, timeout: float = UP_TIMEOUT_S, every: float = 2.0):
    """Call ``check`` until it returns something truthy; fail with ``what`` and its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not seen within {timeout:.0f} s; last: {last!r}\nlaunch output:\n{''.join(OUTPUT)[-6000:]}")


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


@pytest.fixture(scope="module")
def deploy():
    # setsid: its own process group, like a terminal's foreground job, so Ctrl-C reaches every node
    return ExecuteProcess(cmd=["setsid", *launch_command()], name="ros2_launch", output="screen",
                          sigterm_timeout="60", sigkill_timeout="60")


@launch_pytest.fixture(scope="module")
def deploy_graph(deploy):
    def keep(event):
        OUTPUT.append(event.text.decode(errors="replace"))
    return LaunchDescription([
        RegisterEventHandler(OnProcessIO(target_action=deploy, on_stdout=keep, on_stderr=keep)),
        deploy,
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.fixture(scope="module", autouse=True)
def ros2_daemon():
    # `ros2 topic echo` / `ros2 service call` start a daemon for this ROS_DOMAIN_ID when none runs; start it
    # here, detached from every pipe, and stop it at the end
    subprocess.run(["ros2", "daemon", "start"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    yield
    subprocess.run(["ros2", "daemon", "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


@pytest.mark.launch(fixture=deploy_graph)
def test_every_node_of_the_graph_comes_up_once():
    def names():
        listed = sh(["ros2", "node", "list", "--no-daemon"], check=False).split()
        return listed if set(NODES) <= set(listed) else None

    listed = poll("the deploy graph's nodes", names)
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f"node names listed more than once: {duplicates} ({listed})"


@pytest.mark.launch(fixture=deploy_graph)
def test_the_graph_topics_exist():
    def topics():
        listed = sh(["ros2", "topic", "list", "--no-daemon"], check=False).split()
        return listed if set(TOPICS) <= set(listed) else None

    poll("the deploy graph's topics", topics)


@pytest.mark.launch(fixture=deploy_graph)
def test_commands_arrive_on_apo_command():
    # a count over a window, not a rate: messages keep arriving from the imported policy via the arbiter
    echo = Echo("ros2 topic echo /apo/command")
    try:
        poll("20 messages on /apo/command", lambda: echo.text().count("\n---") >= 20 or None, every=1.0)
    finally:
        out = echo.stop()
    assert "Traceback" not in out, out


@pytest.mark.launch(fixture=deploy_graph)
def test_the_readmes_retrain_lines():
    (echo_line,) = readme_lines("ros2 topic echo /apo/retrain/status")
    first, second = readme_lines("ros2 service call /apo/retrain apo_interfaces/srv/Retrain")
    echo = Echo(echo_line)
    try:
        # '{}' trains on all new episodes: rejected until the recorder has closed the first episode's bag
        def accepted():
            out = sh(first)
            return out if "accepted=True" in out else None

        response = poll(f"`{first}` accepted", accepted, every=5.0)
        job_id = re.search(r"job_id='([^']+)'", response).group(1)
        poll(f"job {job_id} on /apo/retrain/status", lambda: f"job_id: {job_id}" in echo.text() or None, every=1.0)
        # the second line is answered either way (queued behind the first job, or no new episodes left)
        out = sh(second)
        assert "response:" in out and "apo_interfaces.srv.Retrain_Response(" in out, out
    finally:
        status = echo.stop()
    assert f"job_id: {job_id}" in status and "progress:" in status, status
    assert "Traceback" not in status, status


@pytest.mark.launch(fixture=deploy_graph)
def test_ctrl_c_stops_every_node_cleanly(deploy):
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group (launch and every node at once)
    os.killpg(deploy.process_details["pid"], signal.SIGINT)
    poll("ros2 launch exiting after Ctrl-C", lambda: deploy.return_code is not None or None, timeout=180, every=1.0)
    out = "".join(OUTPUT)
    died = [line for line in out.splitlines() if "process has died" in line]
    assert not died, "\n".join(died) + "\n" + out[-6000:]
    assert "Traceback" not in out, out[-8000:]
    assert out.count("process has finished cleanly") == len(NODES), out[-6000:]
    assert deploy.return_code == 0, out[-6000:]
