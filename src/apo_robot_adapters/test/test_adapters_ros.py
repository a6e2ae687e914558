"""The adapters over real DDS: a probe node plays the camera driver, the arm's state publishers, the
arbiter and the robot's controllers. Assertions are about what arrived, never about when."""

from __future__ import annotations

import importlib.util
import math
import threading

import cv2
import numpy as np
import pytest

from apo_core.image_codec import image_to_rgb

pytestmark = pytest.mark.ros


@pytest.fixture
def graph():
    from apo_ros.testing import RosGraph

    with RosGraph() as g:
        yield g
        assert not g.errors, g.errors


def make(graph, cls, **params):
    from rclpy.parameter import Parameter

    overrides = [Parameter(k.replace("__", "."), value=v) for k, v in params.items()]
    return graph.add(cls(context=graph.context, parameter_overrides=overrides))


class Inbox:
    def __init__(self):
        self._lock, self.msgs = threading.Lock(), []

    def __call__(self, msg):
        with self._lock:
            self.msgs.append(msg)

    def all(self):
        with self._lock:
            return list(self.msgs)


def subscribe(probe, msg_type, topic, qos=None):
    from apo_ros.qos import qos_for

    box = Inbox()
    probe.create_subscription(msg_type, topic, box, qos or qos_for(topic))
    return box


# --- camera ------------------------------------------------------------------------------------------
def _image(encoding, array, step=None):
    from sensor_msgs.msg import Image

    h, w = array.shape[:2]
    data = np.ascontiguousarray(array).tobytes()
    return Image(height=h, width=w, encoding=encoding, step=step or len(data) // h, data=data)


def test_camera_adapter_republishes_any_encoding_as_rgb8(graph):
    from sensor_msgs.msg import Image

    from apo_robot_adapters.camera_adapter_node import CameraAdapterNode
    from apo_ros.qos import qos_profile

    node = make(graph, CameraAdapterNode, input_topic="/test_cam/image_raw")
    probe = graph.probe_node("cam_probe")
    out = subscribe(probe, Image, "/apo/camera/image_raw")
    pub = probe.create_publisher(Image, "/test_cam/image_raw", qos_profile("reliable", 10))  # a reliable driver
    graph.wait_for_subscribers(pub)
    graph.wait_for_publishers(probe, "/apo/camera/image_raw")
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    uyvy = rng.integers(0, 255, (6, 8, 2), dtype=np.uint8)
    depth = np.full((6, 8), 1000, np.uint16)
    sent = [("bgr8", bgr, bgr[..., ::-1]), ("yuv422", uyvy, cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY)),
            ("16UC1", depth, np.full((6, 8, 3), 128, np.uint8))]
    for i, (encoding, array, _) in enumerate(sent):
        msg = _image(encoding, array)
        msg.header.frame_id = f"frame{i}"
        # best effort keeps the newest frame only: send each until it is through
        graph.wait_until(lambda m=msg: pub.publish(m) or any(o.header.frame_id == m.header.frame_id
                                                              for o in out.all()), what=f"{encoding} frame")
    got = {m.header.frame_id: m for m in out.all()}
    for i, (encoding, _, expected) in enumerate(sent):
        m = got[f"frame{i}"]
        assert m.encoding == "rgb8" and (m.height, m.width) == (6, 8), encoding
        assert np.array_equal(image_to_rgb(m.height, m.width, m.encoding, m.step, m.data), expected), encoding
    # a frame that cannot be read is dropped, the node keeps going
    before = node.frames_dropped
    bad = _image("bayer_rggb8", bgr[..., 0])
    graph.wait_until(lambda: pub.publish(bad) or node.frames_dropped > before, what="bad frame dropped")
    ok = _image("mono8", bgr[..., 0])
    ok.header.frame_id = "after"
    graph.wait_until(lambda: pub.publish(ok) or any(o.header.frame_id == "after" for o in out.all()),
                     what="a frame after the bad one")


def test_camera_adapter_decodes_compressed_jpeg(graph):
    from sensor_msgs.msg import CompressedImage, Image

    from apo_robot_adapters.camera_adapter_node import CameraAdapterNode
    from apo_ros.qos import qos_profile

    make(graph, CameraAdapterNode, input_topic="/test_cam/image_raw/compressed", compressed=True)
    probe = graph.probe_node("cam_probe_c")
    out = subscribe(probe, Image, "/apo/camera/image_raw")
    pub = probe.create_publisher(CompressedImage, "/test_cam/image_raw/compressed", qos_profile("sensor", 1))
    graph.wait_for_subscribers(pub)
    graph.wait_for_publishers(probe, "/apo/camera/image_raw")
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 2] = 220
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes())
    graph.wait_until(lambda: pub.publish(msg) or out.all(), what="decoded jpeg")
    m = out.all()[0]
    arr = image_to_rgb(m.height, m.width, m.encoding, m.step, m.data)
    assert arr.shape == (16, 16, 3) and np.abs(arr.astype(int) - rgb).max() <= 3


def test_camera_adapter_decodes_compressed_png_exactly(graph):
    """image_transport's png (lossless): colour, then a mono png, each arrives as exactly the rgb8 sent."""
    from sensor_msgs.msg import CompressedImage, Image

    from apo_robot_adapters.camera_adapter_node import CameraAdapterNode
    from apo_ros.qos import qos_profile

    node = make(graph, CameraAdapterNode, input_topic="/test_cam/image_raw/compressed", compressed=True)
    probe = graph.probe_node("cam_probe_png")
    out = subscribe(probe, Image, "/apo/camera/image_raw")
    pub = probe.create_publisher(CompressedImage, "/test_cam/image_raw/compressed", qos_profile("reliable", 10))
    graph.wait_for_subscribers(pub)
    graph.wait_for_publishers(probe, "/apo/camera/image_raw")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)
    mono = rng.integers(0, 255, (12, 20), dtype=np.uint8)
    sent = [("colour", "bgr8; png compressed bgr8", cv2.imencode(".png", rgb[..., ::-1])[1], rgb),
            ("mono", "mono8; png compressed mono8", cv2.imencode(".png", mono)[1], np.repeat(mono[..., None], 3, 2))]
    for frame_id, fmt, data, _ in sent:
        msg = CompressedImage(format=fmt, data=data.tobytes())
        msg.header.frame_id = frame_id
        graph.wait_until(lambda m=msg: pub.publish(m) or any(o.header.frame_id == m.header.frame_id
                                                              for o in out.all()), what=f"{frame_id} png")
    got = {m.header.frame_id: m for m in out.all()}
    for frame_id, _, _, expected in sent:
        m = got[frame_id]
        assert m.encoding == "rgb8" and (m.height, m.width) == (12, 20), frame_id
        assert np.array_equal(image_to_rgb(m.height, m.width, m.encoding, m.step, m.data), expected), frame_id
    # a compressed depth stream (compressedDepth) is not a png the adapter reads: dropped, the node goes on
    before = node.frames_dropped
    depth = CompressedImage(format="16UC1; compressedDepth png", data=cv2.imencode(".png", mono)[1].tobytes())
    graph.wait_until(lambda: pub.publish(depth) or node.frames_dropped > before, what="compressedDepth dropped")


@pytest.mark.skipif(importlib.util.find_spec("cv_bridge") is None,
                    reason="cv_bridge is not installed (it comes with a ROS 2 install, not from PyPI)")
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "mono16",
                                      "16UC1", "32FC1", "yuv422", "yuv422_yuy2"])
def test_cv_bridge_and_the_builtin_codec_give_identical_arrays(encoding):
    from apo_core.image_codec import ENCODINGS
    from apo_robot_adapters.image_conversion import bridge_image_to_rgb, load_cv_bridge

    ch, kind = ENCODINGS[encoding]
    rng = np.random.default_rng(2)
    if kind == "f4":
        array = rng.uniform(0, 3, (4, 6, ch)).astype(np.float32)
    else:
        array = rng.integers(0, np.iinfo(kind).max, (4, 6, ch), dtype=np.dtype(kind))
    msg = _image(encoding, array.squeeze(-1) if ch == 1 else array)
    builtin = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
    assert np.array_equal(bridge_image_to_rgb(load_cv_bridge(), msg, (0.0, 2.0)), builtin)


# --- state -------------------------------------------------------------------------------------------
def test_state_adapter_builds_robot_state_from_joint_states_and_pose(graph):
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    from apo_interfaces.msg import RobotState
    from apo_robot_adapters.state_adapter_node import StateAdapterNode
    from apo_ros.qos import qos_profile

    node = make(graph, StateAdapterNode, gripper_joints=["finger1", "finger2"], pose_topic="/test/eef_pose")
    probe = graph.probe_node("state_probe")
    out = subscribe(probe, RobotState, "/apo/robot_state")
    joints = probe.create_publisher(JointState, "/joint_states", qos_profile("reliable", 10))
    pose_pub = probe.create_publisher(PoseStamped, "/test/eef_pose", qos_profile("reliable", 10))
    for pub in (joints, pose_pub):
        graph.wait_for_subscribers(pub)
    graph.wait_for_publishers(probe, "/apo/robot_state")
    pose = PoseStamped()
    pose.header.frame_id = "base_link"
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.4, -0.1, 0.3
    pose.pose.orientation.w = 1.0
    pose_pub.publish(pose)
    graph.wait_until(lambda: node.pose is not None, what="pose received")
    js = JointState(name=["j1", "finger1", "j2", "finger2"], position=[0.5, 0.02, -1.0, 0.03])
    js.header.frame_id = "js"
    joints.publish(JointState(name=["j1"], position=[0.0]))  # lacks the fingers: skipped
    joints.publish(js)
    graph.wait_until(lambda: out.all(), what="RobotState")
    (state,) = out.all()
    assert state.header.frame_id == "js" and list(state.joint_positions) == [0.5, -1.0]
    assert list(state.gripper) == [0.02, 0.03] and state.eef_pose.position.x == 0.4
    assert list(state.proprio) == [0.4, -0.1, 0.3, 0.0, 0.0, 0.0, 1.0, 0.02, 0.03] and not state.task_success


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is None,
                    reason="tf2_ros is not installed (it comes with a ROS 2 install, not from PyPI); "
                           "pose_source topic is tested instead")
def test_state_adapter_reads_the_pose_from_tf(graph):
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import JointState
    from tf2_ros import TransformBroadcaster

    from apo_interfaces.msg import RobotState
    from apo_robot_adapters.state_adapter_node import StateAdapterNode
    from apo_ros.qos import qos_profile

    make(graph, StateAdapterNode, pose_source="tf", base_frame="base_link", eef_frame="tool0")
    probe = graph.probe_node("tf_probe")
    out = subscribe(probe, RobotState, "/apo/robot_state")
    joints = probe.create_publisher(JointState, "/joint_states", qos_profile("reliable", 10))
    graph.wait_for_subscribers(joints)
    broadcaster = TransformBroadcaster(probe)
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = "base_link", "tool0"
    t.transform.translation.x, t.transform.rotation.w = 0.25, 1.0

    def step():
        t.header.stamp = probe.get_clock().now().to_msg()
        broadcaster.sendTransform(t)
        joints.publish(JointState(name=["j1"], position=[0.1]))
        return out.all()

    graph.wait_until(step, what="RobotState from tf")
    assert out.all()[0].eef_pose.position.x == 0.25


def test_a_bad_adapter_config_fails_the_start_naming_the_key(graph, tmp_path):
    from apo_core.errors import ConfigError
    from apo_robot_adapters.state_adapter_node import StateAdapterNode
    from apo_robot_adapters.twist_adapter_node import TwistAdapterNode

    with pytest.raises(ConfigError, match="unknown parameter 'linear_scal'"):
        make(graph, TwistAdapterNode, linear_scal=0.2)
    cfg = tmp_path / "adapters.yaml"
    cfg.write_text("camera: {}\n")
    with pytest.raises(ConfigError, match=r"no section 'state'"):
        make(graph, StateAdapterNode, config_file=str(cfg))


# --- commands ----------------------------------------------------------------------------------------
def _command(values, hold=False):
    from apo_interfaces.msg import ActionCommand

    source = ActionCommand.SOURCE_HOLD if hold else ActionCommand.SOURCE_POLICY
    return ActionCommand(action=[float(v) for v in values], source=source)


def _command_rig(graph, probe, out_type, out_topic):
    from apo_interfaces.msg import ActionCommand
    from apo_ros.qos import qos_for, qos_profile

    out = subscribe(probe, out_type, out_topic, qos_profile("reliable", 1000))
    pub = probe.create_publisher(ActionCommand, "/apo/command", qos_for("/apo/command"))
    graph.wait_for_subscribers(pub)
    graph.wait_for_publishers(probe, out_topic)
    return pub, out


def _is_zero(t):
    v = (t.twist.linear.x, t.twist.linear.y, t.twist.linear.z, t.twist.angular.x, t.twist.angular.y, t.twist.angular.z)
    return all(x == 0.0 for x in v)


def test_twist_adapter_scales_commands_stops_when_stale_and_refuses_bad_input(graph):
    from geometry_msgs.msg import TwistStamped
    from std_msgs.msg import Float64

    from apo_robot_adapters.twist_adapter_node import TwistAdapterNode

    node = make(graph, TwistAdapterNode, frame_id="tool0", linear_scale=0.2, angular_scale=0.5,
                stale_timeout=0.2, rate_hz=50.0, gripper__topic="/test/gripper")
    probe = graph.probe_node("twist_probe")
    gripper = subscribe(probe, Float64, "/test/gripper")
    pub, out = _command_rig(graph, probe, TwistStamped, "/servo_node/delta_twist_cmds")
    graph.wait_until(lambda: out.all() and _is_zero(out.all()[-1]), what="zero twist before any command")
    graph.wait_until(lambda: probe.count_subscribers("/test/gripper") >= 1, what="gripper publisher matched")

    def moving():
        return [t for t in out.all() if not _is_zero(t)]

    graph.wait_until(lambda: pub.publish(_command([1, -0.5, 0, 0, 0, 1, 1])) or moving(), what="a moving twist")
    t = moving()[0]
    assert t.header.frame_id == "tool0"
    assert (t.twist.linear.x, t.twist.linear.y, t.twist.angular.z) == (0.2, -0.1, 0.5)
    graph.wait_until(lambda: gripper.all(), what="gripper position")
    assert gripper.all()[0].data == 0.0  # +1 = closed = closed_position
    # no more commands: the adapter falls back to zero twist
    n = len(out.all())
    graph.wait_until(lambda: len(out.all()) > n and _is_zero(out.all()[-1]), what="zero twist when stale")
    assert node.stopped
    # NaN and wrong length: refused, never sent, the node still answers a good command afterwards
    for bad in ([math.nan] * 7, [0.1] * 3):
        pub.publish(_command(bad))
    graph.wait_until(lambda: node.refused >= 2, what="bad commands refused")
    assert all(math.isfinite(v) for m in out.all()
               for v in (m.twist.linear.x, m.twist.linear.y, m.twist.linear.z))
    m = len(out.all())
    graph.wait_until(lambda: pub.publish(_command([0, 0, 1, 0, 0, 0, 1])) or any(
        x.twist.linear.z == 0.2 for x in out.all()[m:]), what="a good command after bad ones")


@pytest.mark.parametrize("output", ["forward", "joint_trajectory"])
def test_joint_adapter_sends_joint_commands_and_holds_when_stale(graph, output):
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    from apo_robot_adapters.joint_adapter_node import JointAdapterNode

    msg_type = Float64MultiArray if output == "forward" else JointTrajectory
    node = make(graph, JointAdapterNode, output=output, output_topic="/test/joint_cmd",
                joint_names=["a", "b", "c"], scale=2.0, stale_timeout=0.2)
    probe = graph.probe_node("joint_probe")
    pub, out = _command_rig(graph, probe, msg_type, "/test/joint_cmd")
    graph.wait_until(lambda: pub.publish(_command([0.1, 0.2, 0.3])) or out.all(), what="joint command")
    first = out.all()[0]
    if output == "forward":
        assert list(first.data) == [0.2, 0.4, 0.6]
    else:
        assert list(first.joint_names) == ["a", "b", "c"] and list(first.points[0].positions) == [0.2, 0.4, 0.6]
        assert first.points[0].time_from_start.nanosec == 100_000_000
    pub.publish(_command([0.1, 0.2]))  # wrong length: refused
    graph.wait_until(lambda: node.refused >= 1 and node.stopped, what="refused, then stale")
    # the arbiter's HOLD (zeros) is a stop, never a target of zero
    graph.wait_until(lambda: pub.publish(_command([0.3, 0.2, 0.1])) or len({
        tuple(m.data) if output == "forward" else tuple(m.points[0].positions) for m in out.all()}) == 2,
        what="second command")
    pub.publish(_command([0.0, 0.0, 0.0], hold=True))
    graph.wait_until(lambda: node.stopped, what="stopped by hold")
    # position commands hold: nothing but the good commands' values was ever sent
    for m in out.all():
        assert (list(m.data) if output == "forward" else list(m.points[0].positions)) in (
            [0.2, 0.4, 0.6], [0.6, 0.4, 0.2])


def test_joint_adapter_velocity_mode_sends_zeros_when_stale(graph):
    from std_msgs.msg import Float64MultiArray

    from apo_robot_adapters.joint_adapter_node import JointAdapterNode

    make(graph, JointAdapterNode, output_topic="/test/vel_cmd", command="velocity", joint_names=["a", "b"],
         stale_timeout=0.2, gripper_index=2, gripper__output="forward", gripper__topic="/test/gripper_fwd",
         gripper__open_position=0.08, gripper__closed_position=0.0)
    probe = graph.probe_node("vel_probe")
    gripper = subscribe(probe, Float64MultiArray, "/test/gripper_fwd")
    pub, out = _command_rig(graph, probe, Float64MultiArray, "/test/vel_cmd")
    graph.wait_until(lambda: probe.count_subscribers("/test/gripper_fwd") >= 1
                     and probe.count_publishers("/test/gripper_fwd") >= 1, what="gripper topic matched")
    graph.wait_until(lambda: out.all() and list(out.all()[-1].data) == [0.0, 0.0], what="zeros before a command")
    graph.wait_until(lambda: pub.publish(_command([0.5, -0.5, -1.0])) or any(list(m.data) == [0.5, -0.5]
                                                                             for m in out.all()), what="velocity")
    graph.wait_until(lambda: gripper.all(), what="gripper forward command")
    assert list(gripper.all()[0].data) == [0.08]  # -1 = open
    n = len(out.all())
    graph.wait_until(lambda: len(out.all()) > n and list(out.all()[-1].data) == [0.0, 0.0], what="zeros when stale")


@pytest.mark.skipif(importlib.util.find_spec("control_msgs") is None,
                    reason="control_msgs is not installed (it comes with a ROS 2 install, not from PyPI)")
def test_gripper_command_action_client_is_created(graph):
    from apo_robot_adapters.twist_adapter_node import TwistAdapterNode

    node = make(graph, TwistAdapterNode, gripper__output="action")
    assert node._gripper_client is not None


def test_gripper_action_without_control_msgs_is_a_clear_config_error(graph):
    if importlib.util.find_spec("control_msgs") is not None:
        pytest.skip("control_msgs is installed here")
    from apo_core.errors import ConfigError
    from apo_robot_adapters.twist_adapter_node import TwistAdapterNode

    with pytest.raises(ConfigError, match="needs control_msgs"):
        make(graph, TwistAdapterNode, gripper__output="action")
