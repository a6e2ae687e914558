"""launch_pytest: a real arm's standard interfaces through the robot adapters, started by the README's
`ros2 launch` line with `robot:=servo` (README, "Bring your robot").

A probe plays the robot: a RealSense colour stream (bgr8 on config/adapters.yaml's default camera topic),
a UR arm's /joint_states plus two gripper fingers, the end-effector PoseStamped; it starts an episode as a
person would (`ros2 service call /apo/episode/control ...`) and checks what MoveIt Servo and the gripper
controller receive: TwistStamped on /servo_node/delta_twist_cmds equal to /apo/command's policy actions
scaled as configured, gripper positions mapped from the action's last value, a zero twist after the
e-stop and after the camera stops, then every node stopped cleanly by Ctrl-C.

Run by ../test_ros2_workspace.py under pytest 7.4.4 (see deploy_graph_launch.py), from the directory
holding the test's model store (runs/models, a policy with a 9-D state: position, quaternion, two fingers).
"""

import threading
from pathlib import Path

import launch_pytest
import numpy as np
import pytest
import yaml
from launch_helpers import (
    REPO,
    captured_launch,
    poll,
    readme_launch_command,
    ros2_daemon,
    sh,
    stop_with_ctrl_c,
    terminal_launch,
)

assert ros2_daemon  # a module fixture (autouse) of launch_helpers, used here

# config/deploy.yaml's nodes for robot:=servo with no operator, no recording, no retraining
NODES = ["/apo_camera_adapter", "/apo_state_adapter", "/apo_twist_adapter", "/apo_policy", "/apo_arbiter"]
OUTPUT: list[str] = []
UR_JOINTS = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint",
             "wrist_3_joint"]
FINGERS = ["finger_joint1", "finger_joint2"]
ADAPTERS = yaml.safe_load((REPO / "config/adapters.yaml").read_text())


def adapters_config() -> Path:
    """config/adapters.yaml as shipped, with the gripper's finger joints named (a 9-D state for the policy)."""
    cfg = yaml.safe_load((REPO / "config/adapters.yaml").read_text())
    cfg["state"]["gripper_joints"] = FINGERS
    path = Path("servo_adapters.yaml").resolve()
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def servo():
    cmd = readme_launch_command(robot="servo", model_path="runs/models", record="false", retrain="false",
                                operator="none", adapters_config=str(adapters_config()))
    return terminal_launch(cmd, "ros2_launch_servo")


@launch_pytest.fixture(scope="module")
def servo_graph(servo):
    return captured_launch(servo, OUTPUT)


class Inbox:
    def __init__(self):
        self._lock, self._msgs = threading.Lock(), []

    def __call__(self, msg):
        with self._lock:
            self._msgs.append(msg)

    def all(self) -> list:
        with self._lock:
            return list(self._msgs)


@pytest.fixture(scope="module")
def robot():
    """The probe robot: camera, joint states and pose at 15 Hz while ``streaming`` is set; what the controllers get."""
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand
    from apo_ros.qos import qos_for, qos_profile
    from apo_ros.testing import RosGraph

    with RosGraph() as g:
        probe = g.probe_node("fake_ur_arm")
        cam = probe.create_publisher(Image, ADAPTERS["camera"]["input_topic"], qos_profile("reliable", 10))
        joints = probe.create_publisher(JointState, ADAPTERS["state"]["joint_states_topic"], qos_profile("reliable", 10))
        pose = probe.create_publisher(PoseStamped, ADAPTERS["state"]["pose_topic"], qos_profile("reliable", 10))
        twists, grippers, commands = Inbox(), Inbox(), Inbox()
        probe.create_subscription(TwistStamped, ADAPTERS["twist"]["output_topic"], twists, qos_profile("reliable", 100))
        probe.create_subscription(Float64, ADAPTERS["twist"]["gripper"]["topic"], grippers, qos_profile("reliable", 100))
        probe.create_subscription(ActionCommand, topics.COMMAND, commands, qos_for(topics.COMMAND))
        rng = np.random.default_rng(4)
        streaming = threading.Event()

        def tick():
            if not streaming.is_set():
                return
            now = probe.get_clock().now().to_msg()
            bgr = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            img = Image(height=48, width=64, encoding="bgr8", step=64 * 3, data=bgr.tobytes())
            img.header.stamp, img.header.frame_id = now, "camera_color_optical_frame"
            cam.publish(img)
            js = JointState(name=UR_JOINTS + FINGERS, position=[0.1 * i for i in range(6)] + [0.02, 0.02])
            js.header.stamp = now
            joints.publish(js)
            p = PoseStamped()
            p.header.stamp, p.header.frame_id = now, ADAPTERS["state"]["base_frame"]
            p.pose.position.x, p.pose.position.z, p.pose.orientation.w = 0.4, 0.3, 1.0
            pose.publish(p)

        probe.create_timer(1.0 / 15.0, tick)
        streaming.set()
        yield {"twists": twists, "grippers": grippers, "commands": commands, "streaming": streaming}


def _policy_commands(commands) -> list[np.ndarray]:
    return [np.asarray(c.action) for c in commands.all() if c.source == 0 and len(c.action) == 7]  # SOURCE_POLICY


@pytest.mark.launch(fixture=servo_graph)
def test_the_adapters_policy_and_arbiter_come_up_once(robot):
    def names():
        listed = sh(["ros2", "node", "list", "--no-daemon"], check=False).split()
        return listed if set(NODES) <= set(listed) else None

    listed = poll("the servo graph's nodes", names, OUTPUT)
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f"node names listed more than once: {duplicates} ({listed})"


@pytest.mark.launch(fixture=servo_graph)
def test_policy_actions_reach_moveit_servo_and_the_gripper(robot):
    twist_cfg = ADAPTERS["twist"]
    started = sh("ros2 service call /apo/episode/control apo_interfaces/srv/EpisodeControl '{command: 0}'")
    assert "success=True" in started, started

    def matched():
        """A twist equal to a policy command scaled as configured, in the configured frame."""
        actions = _policy_commands(robot["commands"])
        for t in robot["twists"].all():
            lin = [t.twist.linear.x, t.twist.linear.y, t.twist.linear.z]
            ang = [t.twist.angular.x, t.twist.angular.y, t.twist.angular.z]
            if not any(lin + ang):
                continue
            for a in actions:
                if (np.allclose(lin, a[:3] * twist_cfg["linear_scale"], rtol=1e-9, atol=1e-12)
                        and np.allclose(ang, a[3:6] * twist_cfg["angular_scale"], rtol=1e-9, atol=1e-12)):
                    return t
        return None

    twist = poll("a policy command as a TwistStamped on /servo_node/delta_twist_cmds", matched, OUTPUT, every=1.0)
    assert twist.header.frame_id == twist_cfg["frame_id"]

    grip = twist_cfg["gripper"]
    lo, hi = sorted((grip["open_position"], grip["closed_position"]))

    def gripper_from_policy():
        targets = [grip["open_position"] + (min(max(a[6], -1.0), 1.0) + 1.0) / 2.0
                   * (grip["closed_position"] - grip["open_position"]) for a in _policy_commands(robot["commands"])]
        return [m.data for m in robot["grippers"].all() if any(abs(m.data - t) < 1e-12 for t in targets)] or None

    positions = poll("a policy command's gripper value on the gripper topic", gripper_from_policy, OUTPUT, every=1.0)
    assert all(lo <= p <= hi for p in positions), positions


def _zero_twist_after(twists, seen: int) -> bool | None:
    later = twists.all()[seen:]
    return any(not any([t.twist.linear.x, t.twist.linear.y, t.twist.linear.z, t.twist.angular.x, t.twist.angular.y,
                        t.twist.angular.z]) for t in later) or None


@pytest.mark.launch(fixture=servo_graph)
def test_the_e_stop_stops_the_arm(robot):
    seen = len(robot["twists"].all())
    engaged = sh("ros2 service call /apo/arbiter/set_estop std_srvs/srv/SetBool '{data: true}'")
    assert "success=True" in engaged, engaged
    poll("a zero twist after the e-stop", lambda: _zero_twist_after(robot["twists"], seen), OUTPUT, every=1.0)
    released = sh("ros2 service call /apo/arbiter/set_estop std_srvs/srv/SetBool '{data: false}'")
    assert "success=True" in released, released


@pytest.mark.launch(fixture=servo_graph)
def test_a_camera_that_stops_stops_the_arm(robot):
    # the driver dies: no frames -> no policy actions -> the arbiter holds -> the adapter's safe stop
    robot["streaming"].clear()
    seen = len(robot["twists"].all())
    poll("a zero twist after the camera stopped", lambda: _zero_twist_after(robot["twists"], seen), OUTPUT,
         every=1.0)


@pytest.mark.launch(fixture=servo_graph)
def test_ctrl_c_stops_the_servo_graph_cleanly(servo, robot):
    stop_with_ctrl_c(servo, OUTPUT, NODES)
