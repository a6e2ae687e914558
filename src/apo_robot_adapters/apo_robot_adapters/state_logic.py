"""ROS-free assembly of a RobotState from joint states and an end-effector pose.

proprio follows apo_sim's layout (what a state-conditioned policy consumes): end-effector position (3),
quaternion x y z w (4), then the gripper joints' positions.
"""

from __future__ import annotations

from apo_core.errors import ApoError


class JointStateError(ApoError, ValueError):
    pass


def split_joints(names, positions, arm_joints: list[str], gripper_joints: list[str]
                 ) -> tuple[list[float], list[float]]:
    """(arm positions, gripper positions) from one JointState's names/positions.

    ``arm_joints`` empty: every joint that is not a gripper joint, in the message's order. A listed joint
    missing from the message (drivers may split joints over several messages) raises JointStateError.
    """
    names, positions = list(names), [float(p) for p in positions]
    if len(names) != len(positions):
        raise JointStateError(f"JointState has {len(names)} names but {len(positions)} positions")
    by_name = dict(zip(names, positions, strict=True))
    wanted = arm_joints or [n for n in names if n not in gripper_joints]
    missing = [n for n in [*wanted, *gripper_joints] if n not in by_name]
    if missing:
        raise JointStateError(f"joint(s) {missing} not in this JointState (it has {names})")
    return [by_name[n] for n in wanted], [by_name[n] for n in gripper_joints]


def proprio(position, quaternion_xyzw, gripper) -> list[float]:
    return [float(v) for v in (*position, *quaternion_xyzw, *gripper)]
