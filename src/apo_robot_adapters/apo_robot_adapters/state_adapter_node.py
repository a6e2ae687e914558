"""State adapter: sensor_msgs/JointState + end-effector pose -> apo_interfaces/RobotState.

One RobotState per JointState message (its header), once a pose is known (pose_source topic: the newest
geometry_msgs/PoseStamped on pose_topic; tf: the base_frame -> eef_frame transform looked up in tf2,
which needs tf2_ros from a ROS 2 install; none: no pose). A JointState that lacks a configured joint
(drivers may split joints over messages) is skipped with a throttled warning. task_success is false:
a real robot does not judge its task.
"""

from __future__ import annotations

import sys

from geometry_msgs.msg import Pose, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState

from apo_core import topics
from apo_core.errors import ConfigError
from apo_interfaces.msg import RobotState
from apo_robot_adapters.config import StateAdapterConfig
from apo_robot_adapters.node_config import load_adapter_config
from apo_robot_adapters.state_logic import JointStateError, proprio, split_joints
from apo_ros.node import build_or_destroy, run_node
from apo_ros.qos import qos_for, qos_profile


class StateAdapterNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_state_adapter", automatically_declare_parameters_from_overrides=True, **kwargs)
        build_or_destroy(self, self._build)

    def _build(self):
        self.cfg = cfg = load_adapter_config(self, StateAdapterConfig, "state")
        self.pose: Pose | None = Pose() if cfg.pose_source == "none" else None
        self.tf_buffer = None
        if cfg.pose_source == "tf":
            self.tf_buffer = make_tf_buffer(self)
        elif cfg.pose_source == "topic":
            self.create_subscription(PoseStamped, cfg.pose_topic, self._on_pose, qos_profile("reliable", 10))
        self.pub = self.create_publisher(RobotState, cfg.output_topic, qos_for(topics.ROBOT_STATE))
        # joint_state_broadcaster publishes reliable; a best-effort subscriber also matches best-effort drivers
        self.create_subscription(JointState, cfg.joint_states_topic, self._on_joints, qos_profile("sensor", 10))
        self.get_logger().info(
            f"state adapter: {cfg.joint_states_topic} + pose from {cfg.pose_source} -> {cfg.output_topic}")

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.cfg.base_frame:
            self.get_logger().warning(f"pose in frame {msg.header.frame_id!r}, expected base_frame "
                                      f"{self.cfg.base_frame!r}: used as it is", throttle_duration_sec=10.0)
        self.pose = msg.pose

    def _current_pose(self) -> Pose | None:
        if self.tf_buffer is None:
            return self.pose
        try:
            from rclpy.time import Time

            t = self.tf_buffer.lookup_transform(self.cfg.base_frame, self.cfg.eef_frame, Time()).transform
        except Exception as exc:  # tf2's LookupException / ExtrapolationException: not there yet
            self.get_logger().warning(f"no transform {self.cfg.base_frame} -> {self.cfg.eef_frame}: {exc}",
                                      throttle_duration_sec=2.0)
            return None
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = t.translation.x, t.translation.y, t.translation.z
        pose.orientation = t.rotation
        return pose

    def _on_joints(self, msg: JointState) -> None:
        try:
            arm, gripper = split_joints(msg.name, msg.position, self.cfg.arm_joints, self.cfg.gripper_joints)
        except JointStateError as exc:
            self.get_logger().warning(f"joint state skipped: {exc}", throttle_duration_sec=2.0)
            return
        pose = self._current_pose()
        if pose is None:
            self.get_logger().info("waiting for the end-effector pose", throttle_duration_sec=5.0)
            return
        p, q = pose.position, pose.orientation
        self.pub.publish(RobotState(header=msg.header, joint_positions=arm, eef_pose=pose, gripper=gripper,
                                    proprio=proprio((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), gripper),
                                    task_success=False))


def make_tf_buffer(node):
    """A tf2 buffer fed by a TransformListener on ``node``; ConfigError where tf2_ros is not installed."""
    try:
        from tf2_ros import Buffer, TransformListener
    except ImportError as exc:
        raise ConfigError("pose_source tf needs tf2_ros (a ROS 2 install: ros-<distro>-tf2-ros); without it "
                          "publish a geometry_msgs/PoseStamped and use pose_source topic") from exc
    buffer = Buffer()
    node._tf_listener = TransformListener(buffer, node)
    return buffer


def main(args=None):
    sys.exit(run_node(StateAdapterNode, "apo_state_adapter", args))


if __name__ == "__main__":
    main()
