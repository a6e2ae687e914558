"""Scripted state-feedback experts for the simulated tasks, able to take over from any state.

Why state feedback: in simulation the expert plays the human operator who takes over from a failing
policy, so it must recover from wherever the policy left the arm (tilted, low, cube pushed away,
cube dropped). It therefore keeps no plan: every step it re-derives its phase from privileged
simulator state (:class:`apo_sim.env.TaskState`) and servoes towards that phase's target pose:

- the gripper is always servoed to point straight down, yawed to the cube's nearest face (mod 90°);
- the arm goes up to a safe height before moving sideways, and only descends when above its goal;
- the gripper closes only at the grasp pose, and re-opens when it closed on nothing;
- Stack: carry above the green cube, lower until just above it, release, retreat upwards;
- PickPlaceCan: rise until the can clears the bins' walls, cross to the goal compartment, lower,
  release, retreat upwards (:mod:`apo_sim.bin_place`). The can is round: it is grasped at whatever
  yaw the hand has (across its body when it lies on its side).

The only memory is a stuck detector: when the arm is told to move but has not moved for a while,
or progress has stalled for long, it backs off (opens, goes up and towards its home pose) for a
few steps, then resumes.

Actions are raw robosuite OSC_POSE delta inputs (see :mod:`apo_sim.env`): position deltas are
scaled by 5 cm and rotation deltas by 0.5 rad per unit, so ``(target - pos) / 0.05`` asks the
controller to reach the target in one step.

:func:`task_progress` gives the simulated operator a scalar progress in [0, 1] (a phase-based
potential), the object's height above its support and the grasped flag.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from apo_sim import bin_place
from apo_sim.env import TaskState, task_spec

POS_SCALE = 0.05  # metres per unit of OSC_POSE position input
ROT_SCALE = 0.5  # radians per unit of OSC_POSE rotation input
PALM_CLEARANCE = 0.028  # grasp site at most this far below an object's top (Panda palm ~3.3 cm above it)
DOWN = np.array([0.0, 0.0, -1.0])


@dataclass
class ExpertStatus:
    """The privileged task figures the simulated operator uses (published on SIM_TASK_PROGRESS)."""

    progress: float  # 0 = nothing done, 1 = task solved
    object_height: float  # height of the target object's bottom above the table (m), ~0 when resting
    # Held, or released where it belongs (Stack, PickPlaceCan): an object let go on purpose at its
    # goal is not a drop, so the operator's drop trigger must not fire on a correct release.
    grasped: bool
    phase: str = ""

    def as_list(self) -> list[float]:
        return [float(self.progress), float(self.object_height), 1.0 if self.grasped else 0.0]


# --- geometry helpers --------------------------------------------------------------------------
def _rotvec(mat: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (robust near 0 and pi)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(mat).as_rotvec()


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _yaw_of(vec: np.ndarray) -> float:
    return float(np.arctan2(vec[1], vec[0]))


def object_face_yaw(rot: np.ndarray) -> float:
    """Yaw of the object's most horizontal axis (a box face normal), defined modulo 90 degrees."""
    cols = rot.T  # object axes in the world frame
    horiz = np.linalg.norm(cols[:, :2], axis=1)
    return _yaw_of(cols[int(np.argmax(horiz))])


def desired_rotation(closing_yaw: float) -> np.ndarray:
    """Gripper site frame pointing down whose finger-closing (y) axis has yaw ``closing_yaw``."""
    y = np.array([np.cos(closing_yaw), np.sin(closing_yaw), 0.0])
    z = DOWN
    x = np.cross(y, z)
    return np.column_stack([x, y, z])


def tilt_of(state: TaskState) -> float:
    """Angle (rad) between the gripper's approach axis and straight down."""
    return float(np.arccos(np.clip(state.eef_rot[:, 2] @ DOWN, -1.0, 1.0)))


def _rest_height(obj) -> float:
    return bin_place.rest_height(obj)  # vertical half-extent as it lies now (a tipped can is lower)


def object_height(state: TaskState) -> float:
    obj = state.objects[task_spec(state.task).target]
    return float(obj.pos[2] - state.table_z - _rest_height(obj))


def is_held(state: TaskState) -> bool:
    """Grasp check with hysteresis: both pads touching, or the cube sits between nearly-closed fingers.

    Robosuite's contact-based grasp flag flickers while carrying; dropping the cube on a flicker
    would turn a good carry into a failure.
    """
    if state.grasped:
        return True
    obj = state.objects[task_spec(state.task).target]
    width = 2.0 * float(np.min(obj.half_size[:2]))
    near = np.linalg.norm(obj.pos - state.eef_pos) < 0.025
    return bool(near and width - 0.008 < state.gripper_opening < width + 0.006)


def is_over(obj, base) -> bool:
    """Stack: ``obj``'s centre lies over ``base``'s top face (within its half-size plus 1 cm), at any height."""
    return bool(np.linalg.norm(obj.pos[:2] - base.pos[:2]) < base.half_size[0] + 0.01)


def is_placed(state: TaskState) -> bool:
    """Stack: the red cube rests on the green one (touching it, and higher than the table margin).

    PickPlaceCan: the can's centre is inside its goal compartment.
    """
    spec = task_spec(state.task)
    if spec.place_in is not None:
        return state.goal_region is not None and bin_place.in_goal(state, state.objects[spec.target])
    if spec.place_on is None:
        return False
    a, b = state.objects[spec.target], state.objects[spec.place_on]
    above = a.pos[2] > b.pos[2] + b.half_size[2]
    return bool(state.touching.get(spec.place_on, False) and above and is_over(a, b))


def task_progress(state: TaskState) -> ExpertStatus:
    """Phase-based potential in [0, 1]: reach -> grasp -> lift (-> align -> place) -> success."""
    spec = task_spec(state.task)
    obj = state.objects[spec.target]
    height = object_height(state)
    held = is_held(state)
    reach = 1.0 - np.tanh(10.0 * np.linalg.norm(state.eef_pos - obj.pos))
    if state.success:
        placed_task = spec.place_on is not None or spec.place_in is not None
        return ExpertStatus(1.0, height, held or placed_task, "success")
    if spec.place_in is not None:
        if is_placed(state) and not held:
            return ExpertStatus(0.95, height, True, "placed")
        if not held:
            return ExpertStatus(float(0.25 * reach), height, held, "reach")
        return ExpertStatus(bin_place.carry_progress(state, obj), height, held, "carry")
    if spec.place_on is None:  # Lift: success when the cube's centre is 4 cm above the table
        needed = 0.04 - _rest_height(obj)
        lift = float(np.clip(height / max(needed, 1e-6), 0.0, 1.0))
        progress = 0.5 + 0.45 * lift if held else 0.4 * reach
        return ExpertStatus(float(progress), height, held, "lift" if held else "reach")
    base = state.objects[spec.place_on]
    if is_placed(state):
        return ExpertStatus(0.95, height, True, "placed")
    if not held:
        return ExpertStatus(float(0.25 * reach), height, held, "reach")
    align = 1.0 - np.tanh(10.0 * np.linalg.norm(obj.pos[:2] - base.pos[:2]))
    lifted = float(np.clip(height / 0.03, 0.0, 1.0))
    place_z = base.pos[2] + base.half_size[2] + obj.half_size[2]
    lower = 1.0 - np.tanh(10.0 * abs(obj.pos[2] - place_z)) if align > 0.8 else 0.0
    return ExpertStatus(float(0.3 + 0.1 * lifted + 0.3 * align + 0.2 * lower), height, held, "carry")


# --- the expert --------------------------------------------------------------------------------
class ScriptedExpert:
    """State-feedback expert for Lift, Stack and PickPlaceCan. Call :meth:`reset` at each episode start.

    ``act(state)`` returns the 7-D raw action for ``state``; ``status(state)`` the operator's
    figures; ``phase`` names what the last ``act`` decided (for logs and tests).
    """

    hover_clearance = 0.10  # eef above the cube's centre before descending onto it
    lift_clearance = 0.16  # Lift: eef target height above the table while lifting
    carry_clearance = 0.05  # Stack: red cube's bottom above the green cube's top while carrying
    pos_gain = 1.0
    rot_gain = 1.0
    xy_tol = 0.008  # start descending when this close horizontally...
    xy_tol_low = 0.012  # ...and keep descending while within this
    descend_speed = 0.5  # cap on the downward input near objects (fast descents drift sideways)
    stuck_window = 12
    stuck_motion = 0.004
    stall_steps = 80
    backoff_steps = 10
    wrist_margin = 0.35  # rad kept free at both ends of the last wrist joint
    relax_after = 2  # back-offs after which a small residual tilt is tolerated
    max_tilt = 0.35  # rad: no descent onto the cube with the hand tilted more than this...
    relaxed_tilt = 0.5  # ...or this, once relaxed

    def __init__(self, task: str):
        self.spec = task_spec(task)
        self.task = task
        self.reset()

    def reset(self) -> None:
        self._history: deque = deque(maxlen=self.stuck_window)
        self._backoff = 0
        self._best_progress = -1.0
        self._since_best = 0
        self.phase = "start"
        self.backoffs = 0

    # public API
    def status(self, state: TaskState) -> ExpertStatus:
        return task_progress(state)

    def act(self, state: TaskState) -> np.ndarray:
        status = task_progress(state)
        self._track_stall(status.progress)
        if self._backoff > 0:
            self._backoff -= 1
            self.phase = "backoff"
            target, grip, yaw = self._backoff_target(state), -1.0, self._closing_yaw(state)
        else:
            target, grip, yaw, self.phase = self._decide(state)
        action = self._servo(state, target, grip, yaw)
        if self.phase in ("descend", "lower") and state.eef_pos[2] - target[2] < 0.05:
            action[2] = max(action[2], -self.descend_speed)
        self._track_motion(state, target)
        return action

    # decision: phase from state
    def _decide(self, state: TaskState):
        spec = self.spec
        p = state.eef_pos
        yaw = self._closing_yaw(state)
        places = spec.place_on is not None or spec.place_in is not None
        if state.success:
            if not places:
                return np.array([p[0], p[1], state.table_z + self.lift_clearance]), 1.0, yaw, "hold"
            return self._retreat(state), -1.0, yaw, "retreat"
        if places and is_placed(state) and not is_held(state):
            return self._retreat(state), -1.0, yaw, "retreat"
        if is_held(state):
            if spec.place_in is not None:
                target, grip, phase = bin_place.carry_decision(state, state.objects[spec.target])
                return target, grip, yaw, phase
            if spec.place_on is None:
                return np.array([p[0], p[1], state.table_z + self.lift_clearance]), 1.0, yaw, "lift"
            return self._carry(state, yaw)
        return self._approach(state, yaw)

    def _approach(self, state: TaskState, yaw: float):
        obj = state.objects[self.spec.target]
        p = state.eef_pos
        width = 2.0 * float(np.min(obj.half_size[:2]))
        hover_z = obj.pos[2] + self.hover_clearance
        # The palm sits about 3.3 cm above the grasp site: a tall object (the upright can) is grasped
        # below its top rather than at its centre, which also keeps the hand above the bins' walls.
        top = obj.pos[2] + _rest_height(obj)
        grasp_z = max(obj.pos[2] - 0.004, top - PALM_CLEARANCE, state.table_z + 0.015)
        xy_err = float(np.linalg.norm(p[:2] - obj.pos[:2]))
        yaw_err = abs(_wrap(self._current_yaw(state) - yaw))
        opening = state.gripper_opening
        if opening < width - 0.008:  # closed on nothing: open while rising to hover height
            return np.array([p[0], p[1], max(p[2], hover_z)]), -1.0, yaw, "reopen"
        low = p[2] < hover_z - 0.03
        if tilt_of(state) > self._max_tilt():  # straighten before going down onto the cube
            if low:
                return np.array([p[0], p[1], hover_z]), -1.0, yaw, "straighten"
            return np.array([obj.pos[0], obj.pos[1], hover_z]), -1.0, yaw, "straighten"
        if low and xy_err > self.xy_tol_low:
            if xy_err > 0.03:  # never sweep sideways near the table: go up first
                return np.array([p[0], p[1], hover_z]), -1.0, yaw, "rise"
            # small misalignment: re-centre while rising clear of the cube's top
            return np.array([obj.pos[0], obj.pos[1], max(p[2], obj.pos[2] + 0.05)]), -1.0, yaw, "realign"
        if not low and (xy_err > self.xy_tol or yaw_err > 0.12):
            return np.array([obj.pos[0], obj.pos[1], hover_z]), -1.0, yaw, "move_above"
        if abs(p[2] - grasp_z) < 0.012:  # at the grasp pose: close and hold still
            return np.array([obj.pos[0], obj.pos[1], grasp_z]), 1.0, yaw, "close"
        if opening < width + 0.02:  # fingers not open enough to pass around the cube
            return np.array([obj.pos[0], obj.pos[1], max(p[2], obj.pos[2] + 0.05)]), -1.0, yaw, "open"
        return np.array([obj.pos[0], obj.pos[1], grasp_z]), -1.0, yaw, "descend"

    def _carry(self, state: TaskState, yaw: float):
        a = state.objects[self.spec.target]
        b = state.objects[self.spec.place_on]
        p = state.eef_pos
        offset = p - a.pos  # where the cube sits in the hand (slip-aware)
        top_b = b.pos[2] + b.half_size[2]
        carry_z = top_b + a.half_size[2] + self.carry_clearance  # for the red cube's centre
        place_z = top_b + a.half_size[2] + 0.006
        xy_err = float(np.linalg.norm(a.pos[:2] - b.pos[:2]))
        a_bottom = a.pos[2] - a.half_size[2]
        low = a_bottom < top_b + 0.02
        tol = 0.012 if low else 0.006
        if xy_err > tol:
            if low and xy_err > 0.02:
                return np.array([p[0], p[1], carry_z + offset[2]]), 1.0, yaw, "rise_carry"
            target = np.array([b.pos[0], b.pos[1], max(a.pos[2], carry_z)]) + offset
            return target, 1.0, yaw, "move_over"
        if a.pos[2] - place_z < 0.006 or state.touching.get(self.spec.place_on, False):
            return np.array([p[0], p[1], p[2]]), -1.0, yaw, "release"
        return np.array([b.pos[0], b.pos[1], place_z]) + offset, 1.0, yaw, "lower"

    def _retreat(self, state: TaskState) -> np.ndarray:
        p = state.eef_pos
        clear = 0.07
        if self.spec.place_in is not None:
            # PickPlaceCan only succeeds once the hand is 4.3 cm from the can: rise as soon as the
            # fingers clear it, or a can still settling after the release is reported as failure.
            obj = state.objects[self.spec.target]
            clear = min(clear, 2.0 * float(np.min(obj.half_size[:2])) + 0.012)
        if state.gripper_opening < clear:  # let the fingers clear the cube before moving
            return p.copy()
        return np.array([p[0], p[1], max(p[2] + 0.05, p[2])])

    def _backoff_target(self, state: TaskState) -> np.ndarray:
        p, home = state.eef_pos, state.home_pos
        if p[2] < home[2] - 0.03:
            return np.array([p[0], p[1], home[2]])  # straight up first
        return home.copy()

    # orientation
    def _relaxed(self) -> bool:
        return self.backoffs >= self.relax_after

    def _max_tilt(self) -> float:
        return self.relaxed_tilt if self._relaxed() else self.max_tilt

    def _current_yaw(self, state: TaskState) -> float:
        return _yaw_of(state.eef_rot[:, 1])

    def _closing_yaw(self, state: TaskState) -> float:
        """Yaw for the finger-closing axis: a cube face direction (mod 90°) near the current yaw.

        Among the equivalent yaws, prefer the nearest one that keeps the last wrist joint (which
        turns the hand about the vertical with d(q7)/d(yaw) = -1 when pointing down) inside its
        limits; a wrist wound against its limit cannot turn any further and the grasp never lines up.
        """
        obj = state.objects[self.spec.target]
        current = self._current_yaw(state)
        face, period = self._grasp_yaws(obj, current)
        q7, (lo, hi) = state.joint_positions[-1], state.joint_limits[-1]
        nearest = face + period * np.round((current - face) / period)
        best, best_cost = nearest, np.inf
        for k in (-1, 0, 1):  # turns of at most 135 degrees: the servo takes the short way round
            candidate = nearest + k * period
            if abs(candidate - current) > 0.75 * np.pi + 0.01:
                continue
            q7_after = q7 - (candidate - current)
            overshoot = max(lo + self.wrist_margin - q7_after, q7_after - (hi - self.wrist_margin), 0.0)
            cost = abs(candidate - current) + 10.0 * overshoot
            if cost < best_cost:
                best, best_cost = candidate, cost
        return float(best)

    def _grasp_yaws(self, obj, current: float) -> tuple[float, float]:
        """A yaw the fingers may close along, and the period at which the equivalent ones repeat.

        Box: a face normal, every 90°. Upright cylinder: any yaw (the current one, kept every 90° so
        the wrist-limit choice above still applies). Cylinder on its side: across its axis, every 180°.
        """
        if self.spec.shape != "cylinder":
            return object_face_yaw(obj.rot), np.pi / 2
        axis = obj.rot[:, 2]
        if abs(axis[2]) > 0.5:
            return current, np.pi / 2
        return _yaw_of(axis) + np.pi / 2, np.pi

    # control
    def _servo(self, state: TaskState, target: np.ndarray, grip: float, yaw: float) -> np.ndarray:
        dpos = self.pos_gain * (target - state.eef_pos) / POS_SCALE
        r_err = desired_rotation(yaw) @ state.eef_rot.T
        drot = self.rot_gain * _rotvec(r_err) / ROT_SCALE
        if self._relaxed() and tilt_of(state) < self.relaxed_tilt:
            # Repeatedly stuck with a slightly tilted hand: usually a wrist joint at its limit that
            # fights the straightening. Stop straightening (keep yaw) and let the position through.
            drot[:2] = 0.0
        action = np.concatenate([dpos, drot, [grip]])
        return np.clip(action, -1.0, 1.0)

    # stuck detection (the only memory)
    def _track_motion(self, state: TaskState, target: np.ndarray) -> None:
        self._history.append((state.eef_pos.copy(), float(np.linalg.norm(target - state.eef_pos))))
        if self._backoff or len(self._history) < self.stuck_window or self.phase in ("close", "release", "hold"):
            return
        moved = np.linalg.norm(self._history[-1][0] - self._history[0][0])
        wants = min(d for _, d in self._history)
        if wants > 0.02 and moved < self.stuck_motion:
            self._start_backoff()

    def _track_stall(self, progress: float) -> None:
        if progress >= 1.0 or progress > self._best_progress + 0.02:
            self._best_progress, self._since_best = progress, 0
            return
        self._since_best += 1
        if self._since_best > self.stall_steps and not self._backoff:
            self._start_backoff()
            self._best_progress, self._since_best = progress, 0

    def _start_backoff(self) -> None:
        self._backoff = self.backoff_steps
        self.backoffs += 1
        self._history.clear()


def make_expert(task: str) -> ScriptedExpert:
    return ScriptedExpert(task)
