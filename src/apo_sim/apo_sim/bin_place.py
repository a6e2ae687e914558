"""Putting a held object into a goal region (PickPlaceCan's bin compartment): geometry, progress, decisions.

The scripted expert (:mod:`apo_sim.expert`) grasps every task's target the same way; what differs
is where the held object goes. For a bin the carry is long (about 65 cm between the bins) and must
clear the bins' walls, so it gets its own potential and its own carry logic, kept here.

The bins' walls and the compartment dividers all end at the goal region's top (``goal_region[1, 2]``),
so "high enough to cross" is read from the region itself. The object is put down at the point of the
compartment nearest the arm's home position (a margin inside its dividers): the compartment's far
corner is at the edge of the Panda's reach, where the arm sags and cannot carry the can level.
"""

from __future__ import annotations

import numpy as np

from apo_sim.env import ObjectState, TaskState

WALL_CLEARANCE = 0.03  # object's bottom above the walls' top while carrying sideways
RELEASE_HEIGHT = 0.01  # object's bottom above the bin floor when the fingers open
PLACE_MARGIN = 0.06  # place point's distance inside the compartment's sides (can radius + divider + slack)
OVER_TOL = 0.03  # start lowering when the object's centre is this close (xy) to the place point...
INSIDE_TOL = 0.04  # ...and keep lowering while within this once below the walls' top
CROSS_CLEARANCE = 0.01  # object's bottom above the walls' top before any sideways move
CARRY_SCALE = 0.7  # m: xy distance over which the carry term of the progress rises linearly (bin to bin)


def rest_height(obj: ObjectState) -> float:
    """Vertical half-extent of the object as it lies now (upright can 4 cm, can on its side 2.5 cm)."""
    return float(np.abs(obj.rot[2, :]) @ obj.half_size)


def place_point(state: TaskState) -> np.ndarray:
    """(x, y) where the object goes down: inside the compartment, as near the arm's home as the margin allows."""
    low, high = state.goal_region[0, :2] + PLACE_MARGIN, state.goal_region[1, :2] - PLACE_MARGIN
    return np.clip(state.home_pos[:2], low, np.maximum(low, high))


def wall_top(state: TaskState) -> float:
    return float(state.goal_region[1, 2])


def in_goal(state: TaskState, obj: ObjectState) -> bool:
    """The object's centre is inside the goal compartment (robosuite's own test, without the eef distance)."""
    low, high = state.goal_region
    return bool(np.all(obj.pos > low) and np.all(obj.pos < high))


def carry_height(state: TaskState, obj: ObjectState) -> float:
    """Height for the object's centre while carrying: its bottom clears the walls."""
    return wall_top(state) + WALL_CLEARANCE + rest_height(obj)


def release_height(state: TaskState, obj: ObjectState) -> float:
    return state.table_z + RELEASE_HEIGHT + rest_height(obj)


def over_goal(state: TaskState, obj: ObjectState) -> bool:
    below_walls = obj.pos[2] - rest_height(obj) < wall_top(state)
    tol = INSIDE_TOL if below_walls else OVER_TOL
    return bool(np.linalg.norm(obj.pos[:2] - place_point(state)) < tol)


def carry_progress(state: TaskState, obj: ObjectState) -> float:
    """Progress while the object is held, in [0.3, 0.9]: lift over the walls, carry, lower into place.

    Each term only grows along the expert's path (rise, cross, lower), so a correct carry never looks
    like a stall or a regress to the scripted operator.
    """
    over = over_goal(state, obj)
    bottom = obj.pos[2] - rest_height(obj)
    needed = wall_top(state) + WALL_CLEARANCE - state.table_z
    lifted = 1.0 if over else float(np.clip((bottom - state.table_z) / max(needed, 1e-6), 0.0, 1.0))
    dist = float(np.linalg.norm(obj.pos[:2] - place_point(state)))
    carried = 1.0 - float(np.clip(dist / CARRY_SCALE, 0.0, 1.0))
    lowered = 0.0
    if over:
        top, low = carry_height(state, obj), release_height(state, obj)
        lowered = float(np.clip((top - obj.pos[2]) / max(top - low, 1e-6), 0.0, 1.0))
    return 0.3 + 0.15 * lifted + 0.35 * carried + 0.1 * lowered


def carry_decision(state: TaskState, obj: ObjectState):
    """(eef target, grip, phase) for a held object: rise over the walls, cross, lower, open."""
    p = state.eef_pos
    offset = p - obj.pos  # where the object sits in the hand (slip-aware)
    goal = place_point(state)
    top = carry_height(state, obj)
    if not over_goal(state, obj):
        if obj.pos[2] - rest_height(obj) < wall_top(state) + CROSS_CLEARANCE:  # straight up before moving sideways
            return np.array([p[0], p[1], top + offset[2]]), 1.0, "rise_carry"
        return np.array([goal[0], goal[1], top]) + offset, 1.0, "move_over"
    low = release_height(state, obj)
    if obj.pos[2] - low < 0.01:
        return p.copy(), -1.0, "release"
    return np.array([goal[0], goal[1], low]) + offset, 1.0, "lower"
