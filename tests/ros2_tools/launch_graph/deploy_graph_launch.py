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

import launch_pytest
import pytest
from launch_helpers import (
    Echo,
    captured_launch,
    poll,
    readme_launch_command,
    readme_lines,
    ros2_daemon,
    sh,
    stop_with_ctrl_c,
    terminal_launch,
)

assert ros2_daemon  # a module fixture (autouse) of launch_helpers, used here

# config/deploy.yaml's nodes for robot:=sim, operator scripted, record and retrain on
NODES = ["/apo_sim", "/apo_policy", "/apo_arbiter", "/apo_scripted_operator", "/apo_joy_teleop", "/apo_recorder",
         "/apo_retrain"]
TOPICS = ["/apo/command", "/apo/policy_action", "/apo/step", "/apo/retrain/status", "/diagnostics"]
OUTPUT: list[str] = []  # everything `ros2 launch` printed


def launch_command() -> list[str]:
    """The README's `ros2 launch` line with the simulated arm and the test's store and settings."""
    # robot:=sim task:=Lift (the simulated arm); short episodes so one is recorded soon; the test's
    # store (made by `apo models import`) and retrain settings (cheap jobs, no simulated gate)
    return readme_launch_command(robot="sim", task="Lift", model_path="runs/models", max_episode_steps="30",
                                 retrain_config=os.environ["APO_TEST_RETRAIN_CONFIG"])


@pytest.fixture(scope="module")
def deploy():
    return terminal_launch(launch_command(), "ros2_launch")


@launch_pytest.fixture(scope="module")
def deploy_graph(deploy):
    return captured_launch(deploy, OUTPUT)


@pytest.mark.launch(fixture=deploy_graph)
def test_every_node_of_the_graph_comes_up_once():
    def names():
        listed = sh(["ros2", "node", "list", "--no-daemon"], check=False).split()
        return listed if set(NODES) <= set(listed) else None

    listed = poll("the deploy graph's nodes", names, OUTPUT)
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f"node names listed more than once: {duplicates} ({listed})"


@pytest.mark.launch(fixture=deploy_graph)
def test_ros2_param_get_answers_from_the_one_policy_node():
    # with two nodes named /apo_policy this answered "Parameter not set" once in 7 calls
    for _ in range(7):
        out = sh(["ros2", "param", "get", "/apo_policy", "model_path"], timeout=120)
        assert "String value is: runs/models" in out, out


@pytest.mark.launch(fixture=deploy_graph)
def test_the_graph_topics_exist():
    def topics():
        listed = sh(["ros2", "topic", "list", "--no-daemon"], check=False).split()
        return listed if set(TOPICS) <= set(listed) else None

    poll("the deploy graph's topics", topics, OUTPUT)


@pytest.mark.launch(fixture=deploy_graph)
def test_commands_arrive_on_apo_command():
    # a count over a window, not a rate: messages keep arriving from the imported policy via the arbiter
    echo = Echo("ros2 topic echo /apo/command")
    try:
        poll("20 messages on /apo/command", lambda: echo.text().count("\n---") >= 20 or None, OUTPUT, every=1.0)
    finally:
        out = echo.stop()
    assert "Traceback" not in out, out


@pytest.mark.launch(fixture=deploy_graph)
def test_apo_command_has_a_steady_rate():
    # `ros2 topic hz` reports an average rate over its window: commands keep coming, window after window.
    # The value is printed, not bounded (a loaded machine pauses processes; the figure is the README's).
    hz = Echo("ros2 topic hz /apo/command")
    try:
        poll("3 rate reports from `ros2 topic hz /apo/command`",
             lambda: len(re.findall(r"average rate: ([0-9.]+)", hz.text())) >= 3 or None, OUTPUT, every=1.0)
    finally:
        out = hz.stop()
    rates = [float(r) for r in re.findall(r"average rate: ([0-9.]+)", out)]
    print(f"/apo/command average rates (Hz): {rates}")
    assert rates and all(r > 0 for r in rates), out
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

        response = poll(f"`{first}` accepted", accepted, OUTPUT, every=5.0)
        job_id = re.search(r"job_id='([^']+)'", response).group(1)
        poll(f"job {job_id} on /apo/retrain/status", lambda: f"job_id: {job_id}" in echo.text() or None, OUTPUT,
             every=1.0)
        # the second line is answered either way (queued behind the first job, or no new episodes left)
        out = sh(second)
        assert "response:" in out and "apo_interfaces.srv.Retrain_Response(" in out, out
    finally:
        status = echo.stop()
    assert f"job_id: {job_id}" in status and "progress:" in status, status
    assert "Traceback" not in status, status


@pytest.mark.launch(fixture=deploy_graph)
def test_ctrl_c_stops_every_node_cleanly(deploy):
    stop_with_ctrl_c(deploy, OUTPUT, NODES)
