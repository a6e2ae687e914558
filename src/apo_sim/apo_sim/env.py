"""A robosuite arm as a plain Python object: the simulated robot every APO-ROS node can drive.

ROS-free on purpose: the node (``sim_node``), the demo collector and the tests all build on this one
class, so the simulator is testable without rclpy.

Action: the 7-D raw robosuite OSC_POSE *delta* input ``[dx dy dz droll dpitch dyaw grip]``, each in
[-1, 1] (robosuite scales the first three to +-5 cm and the next three to +-0.5 rad per control step,
in the robot base frame, which for the Panda is aligned with the world). ``grip`` is -1 open, +1 close
(0 holds the fingers where they are). Non-finite actions raise :class:`InvalidActionError`; finite
values outside [-1, 1] are clipped.

SimObservation: an upright uint8 RGB image from one camera, ``proprio`` = eef position (3) + eef
quaternion xyzw (4) + gripper finger joint positions (2), the arm's joint positions, the eef pose
and the task's success flag. Privileged state for the scripted expert comes from :meth:`task_state`.

Rendering: MuJoCo's offscreen defaults (4x multisampling, 4096 shadow map, reflections) cost about
three times the physics. ``fast_render=True`` (the default) turns them off and rebuilds the render
context once (ENVIRONMENT.md), with no visible difference at the small image sizes a VLA consumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from apo_core.errors import ApoError, InvalidActionError
from apo_core.normalization import check_finite
from apo_core.tasks import TASK_DEFAULTS
from apo_sim import perturbations, scene

ACTION_DIM = 7
PROPRIO_DIM = 9
DEFAULT_CAMERA = "agentview"
DEFAULT_CONTROL_FREQ = 20.0
DEFAULT_IMAGE_SIZE = 128
SETTLE_STEPS = 3
# Seed of the scene *model*: robosuite draws some object sizes (Lift's cube: each half-extent in
# [0.020, 0.022] m) when it builds the model, and a soft reset never rebuilds it. Building every model
# from one fixed seed keeps an episode's scene a function of (task, reset seed) alone, whichever SimEnv
# instance runs it; an unseeded model made Lift's grasp width, hence outcomes, vary between instances.
MODEL_SEED = 0


class SimConfigError(ApoError, ValueError):
    """The simulator was asked for a task, robot, camera or size it cannot provide."""


@dataclass(frozen=True)
class TaskSpec:
    """What the environment and the expert need to know about one task."""

    name: str
    instruction: str
    target: str  # the object the robot must grasp
    objects: tuple[str, ...]  # names of the task's robosuite object models (see apo_sim.scene.find_object)
    place_on: str | None = None  # object the target must end up on (Stack)
    place_in: str | None = None  # region the target must end up in (PickPlaceCan: "bin", TaskState.goal_region)
    shape: str = "box"  # target's shape: "box" (grasp across faces) or "cylinder" (any yaw while upright)
    max_episode_steps: int = 150  # default episode limit (control steps) of a policy rollout

    @classmethod
    def with_defaults(cls, name: str, **kwargs) -> TaskSpec:
        """The spec with the instruction and step limit of ``apo_core.tasks`` (shared with the arbiter)."""
        d = TASK_DEFAULTS[name]
        return cls(name, d.instruction, max_episode_steps=d.max_episode_steps, **kwargs)


TASKS: dict[str, TaskSpec] = {
    "Lift": TaskSpec.with_defaults("Lift", target="cube", objects=("cube",)),
    "Stack": TaskSpec.with_defaults("Stack", target="cubeA", objects=("cubeA", "cubeB"), place_on="cubeB"),
    "PickPlaceCan": TaskSpec.with_defaults("PickPlaceCan", target="Can", objects=("Can",), place_in="bin",
                                           shape="cylinder"),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise SimConfigError(f"unknown task {task!r}: apo_sim supports {sorted(TASKS)}")
    return TASKS[task]


def _check_perturbation(kind: str | None) -> str | None:
    if kind is not None and kind not in perturbations.PERTURBATIONS:
        raise SimConfigError(f"unknown perturbation {kind!r}: choose one of {list(perturbations.PERTURBATIONS)} or None")
    return kind


def validate_action(action) -> np.ndarray:
    """The action as a (7,) float64 array clipped to [-1, 1]; NaN/inf or a wrong shape raise."""
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidActionError(f"action is not numeric: {action!r}") from exc
    if arr.shape != (ACTION_DIM,):
        raise InvalidActionError(
            f"action must have {ACTION_DIM} values [dx dy dz droll dpitch dyaw gripper], got shape {arr.shape}"
        )
    arr = check_finite(arr, "action")
    return np.clip(arr, -1.0, 1.0)


@dataclass
class ObjectState:
    """Pose and half-extents of one rigid object (world frame)."""

    pos: np.ndarray
    rot: np.ndarray  # 3x3 rotation matrix
    half_size: np.ndarray


@dataclass
class TaskState:
    """Privileged simulator state: what the scripted expert sees instead of the camera."""

    task: str
    eef_pos: np.ndarray
    eef_rot: np.ndarray  # 3x3, columns are the gripper site's axes in the world frame
    gripper_qpos: np.ndarray  # two finger joints; opening = qpos[0] - qpos[1] (about 0.08 m fully open)
    finger_axis: np.ndarray  # unit vector (world) along which the fingers close
    objects: dict[str, ObjectState]
    grasped: bool  # both finger pads touch the task's target object
    touching: dict[str, bool]  # target object in contact with each other object (Stack: cubeB)
    table_z: float  # surface the objects rest on at reset (table top; PickPlaceCan: the bin floor)
    home_pos: np.ndarray  # eef position right after the last reset's settle
    joint_positions: np.ndarray  # arm joints (7)
    joint_limits: np.ndarray  # (7, 2) lower/upper limits of the arm joints
    success: bool
    step: int
    goal_region: np.ndarray | None = None  # (2, 3) low/high corners for the target's centre (PickPlaceCan)

    @property
    def gripper_opening(self) -> float:
        return float(self.gripper_qpos[0] - self.gripper_qpos[1])


@dataclass
class SimObservation:
    """What a real robot driver would publish: camera image plus proprioception."""

    image: np.ndarray | None  # (H, W, 3) uint8 upright RGB, None when rendering is off
    proprio: np.ndarray  # (9,) eef pos, eef quat xyzw, gripper finger qpos
    joint_positions: np.ndarray
    eef_pos: np.ndarray
    eef_quat: np.ndarray  # xyzw
    gripper_qpos: np.ndarray
    success: bool
    step: int
    extra: dict = field(default_factory=dict)


def _setup_gl_env() -> None:
    # robosuite forces egl unless MUJOCO_GL is set before it is imported (ENVIRONMENT.md).
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    # robosuite imports mujoco.viewer, which imports glfw, and glfw checks each candidate library by
    # running a Python subprocess. A signal to the process group (Ctrl-C, launch's SIGTERM) while a
    # node starts kills that subprocess and the import fails. Naming the wheel's own library skips it.
    if not os.environ.get("PYGLFW_LIBRARY"):
        bundled = _bundled_glfw_library()
        if bundled is not None:
            os.environ["PYGLFW_LIBRARY"] = bundled


def _bundled_glfw_library() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("glfw")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    variant = "wayland" if os.environ.get("XDG_SESSION_TYPE") == "wayland" else "x11"
    for folder in spec.submodule_search_locations:
        for candidate in (os.path.join(folder, variant, "libglfw.so"), os.path.join(folder, "libglfw.so")):
            if os.path.isfile(candidate):
                return candidate
    return None


def _mat2quat_xyzw(mat: np.ndarray) -> np.ndarray:
    import mujoco

    wxyz = np.zeros(4)
    mujoco.mju_mat2Quat(wxyz, np.asarray(mat, dtype=np.float64).reshape(9))
    xyzw = np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])
    return xyzw if xyzw[3] >= 0 else -xyzw  # one canonical sign: w >= 0


class SimEnv:
    """One robosuite task with a Panda arm, an OSC_POSE delta controller and one camera.

    Parameters: ``task`` (Lift, Stack, PickPlaceCan), ``robot`` (Panda), ``camera`` (a camera of the robosuite
    scene, default agentview), ``image_size`` (square images, pixels), ``control_freq`` (simulated
    control steps per simulated second), ``seed`` (object placement and arm start noise; reset(seed)
    reseeds; the model itself is always built from MODEL_SEED), ``render`` (False: no camera at all,
    for expert-only rollouts), ``fast_render``, ``perturbation`` (None or one of
    :data:`apo_sim.perturbations.PERTURBATIONS`, applied at every reset; see that module).
    """

    def __init__(self, task: str = "Lift", robot: str = "Panda", camera: str = DEFAULT_CAMERA,
                 image_size: int = DEFAULT_IMAGE_SIZE, control_freq: float = DEFAULT_CONTROL_FREQ,
                 seed: int | None = None, render: bool = True, fast_render: bool = True,
                 perturbation: str | None = None):
        self.spec = task_spec(task)
        _check_perturbation(perturbation)
        if robot != "Panda":
            raise SimConfigError(f"unknown robot {robot!r}: apo_sim's expert and gripper handling support 'Panda'")
        if render and (not isinstance(image_size, int | np.integer) or not 16 <= int(image_size) <= 1024):
            raise SimConfigError(f"image_size must be an integer in [16, 1024] pixels, got {image_size!r}")
        if not np.isfinite(control_freq) or not 1.0 <= float(control_freq) <= 500.0:
            raise SimConfigError(f"control_freq must be in [1, 500] Hz, got {control_freq!r}")
        _setup_gl_env()
        import robosuite
        from robosuite.controllers import load_composite_controller_config

        self.task = task
        self.robot = robot
        self.camera = camera
        self.image_size = int(image_size)
        self.control_freq = float(control_freq)
        self.render_enabled = bool(render)
        self.fast_render = bool(fast_render)
        controller = load_composite_controller_config(controller=None, robot=robot)  # OSC_POSE delta, base frame
        self._env = robosuite.make(
            task, robots=robot, controller_configs=controller, has_renderer=False,
            has_offscreen_renderer=self.render_enabled, use_camera_obs=False, use_object_obs=True,
            control_freq=self.control_freq, horizon=10**9, ignore_done=True, hard_reset=False,
            reward_shaping=False, seed=MODEL_SEED,
        )
        self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state  # placements
        sim = self._env.sim
        if self.render_enabled:
            cameras = [sim.model.camera_id2name(i) for i in range(sim.model.ncam)]
            if camera not in cameras:
                self.close()
                raise SimConfigError(f"unknown camera {camera!r} for task {task}: available cameras {cameras}")
        self._robot = self._env.robots[0]
        self._arm = self._robot.arms[0]
        self._eef_site = self._robot.eef_site_id[self._arm]
        self._joint_idx = np.asarray(self._robot._ref_joint_pos_indexes)
        joint_ids = [sim.model.joint_name2id(n) for n in self._robot.robot_joints]
        self._joint_limits = np.array(sim.model.jnt_range[joint_ids], dtype=np.float64)
        self._grip_idx = np.asarray(self._robot._ref_gripper_joint_pos_indexes[self._arm])
        grip = self._robot.gripper[self._arm]
        self._finger_bodies = [sim.model.body_name2id(f"{grip.naming_prefix}{n}") for n in ("leftfinger", "rightfinger")]
        self._objects = {name: scene.find_object(self._env, name) for name in self.spec.objects}
        self._half_sizes = {n: scene.object_half_size(self._env, o) for n, o in self._objects.items()}
        self._table_z = scene.support_height(self._env)
        self._body_ids: dict[str, int] = {}
        self._steps = 0
        self._home_pos = np.zeros(3)
        if self.render_enabled and self.fast_render:
            self._apply_fast_render()
        self._scene = perturbations.ScenePerturber(self._env, task, list(self._objects.values()), perturbation, seed)
        self._scene.apply(seed)  # also sets the training placement range (PickPlaceCan's is not robosuite's)
        self._env.reset()  # the constructor leaves body poses stale until the first reset/forward
        self._settle()
        self._after_reset()

    # --- properties -----------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self.spec.instruction

    @property
    def action_dim(self) -> int:
        return ACTION_DIM

    @property
    def steps(self) -> int:
        """Control steps since the last reset."""
        return self._steps

    @property
    def raw(self):
        """The underlying robosuite environment (for tools that need more than this class offers)."""
        return self._env

    @property
    def perturbation(self) -> str | None:
        """Scene perturbation for evaluation (None, position, background, texture); set it, then reset."""
        return self._scene.kind

    @perturbation.setter
    def perturbation(self, kind: str | None) -> None:
        self._scene.kind = _check_perturbation(kind)

    # --- episode ---------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, render: bool = True) -> SimObservation:
        """Start a new episode (soft reset: the model and render context are kept, ~10-40 ms)."""
        if seed is not None:
            # Reseed in place: robosuite's placement sampler and robot hold references to env.rng.
            self._env.rng.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
        self._scene.apply(seed)
        self._env.reset()
        self._settle()
        self._after_reset()
        return self.observe(render=render)

    def _settle(self):
        # robosuite drops objects from 1 cm above the table; let them land before the first frame
        # (uncounted zero-motion steps: the arm holds its pose, the fingers stay where they are).
        for _ in range(SETTLE_STEPS):
            self._env.step(np.zeros(ACTION_DIM))

    def _after_reset(self):
        sim = self._env.sim
        self._body_ids = {n: sim.model.body_name2id(o.root_body) for n, o in self._objects.items()}
        self._steps = 0
        self._home_pos = np.array(sim.data.site_xpos[self._eef_site])

    def step(self, action, render: bool = True) -> SimObservation:
        """Apply one validated action for one control step and return the new observation."""
        act = validate_action(action)
        self._env.step(act)
        self._steps += 1
        return self.observe(render=render)

    def success(self) -> bool:
        return bool(self._env._check_success())

    # --- observation -----------------------------------------------------------------------------
    def observe(self, render: bool = True) -> SimObservation:
        data = self._env.sim.data
        eef_pos = np.array(data.site_xpos[self._eef_site])
        eef_quat = _mat2quat_xyzw(data.site_xmat[self._eef_site])
        grip = np.array(data.qpos[self._grip_idx])
        image = self.render() if (render and self.render_enabled) else None
        return SimObservation(
            image=image, proprio=np.concatenate([eef_pos, eef_quat, grip]),
            joint_positions=np.array(data.qpos[self._joint_idx]), eef_pos=eef_pos, eef_quat=eef_quat,
            gripper_qpos=grip, success=self.success(), step=self._steps,
        )

    def render(self) -> np.ndarray:
        """The camera image, upright, (image_size, image_size, 3) uint8 RGB."""
        if not self.render_enabled:
            raise SimConfigError("rendering is disabled for this SimEnv (render=False)")
        sim = self._env.sim
        # OSMesa/EGL contexts are per thread: make ours current so any thread may render.
        sim._render_context_offscreen.gl_ctx.make_current()
        img = sim.render(width=self.image_size, height=self.image_size, camera_name=self.camera)
        return np.ascontiguousarray(img[::-1])  # OpenGL rows are bottom-up

    def _apply_fast_render(self):
        import mujoco

        sim = self._env.sim
        ctx = sim._render_context_offscreen
        sim.model.vis.quality.offsamples = 0
        sim.model.vis.quality.shadowsize = 1024
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()  # the context reads offsamples/shadowsize when built
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    # --- privileged state ------------------------------------------------------------------------
    def task_state(self) -> TaskState:
        """Ground-truth state for the scripted expert and the simulated operator."""
        env, data = self._env, self._env.sim.data
        objects = {
            n: ObjectState(pos=np.array(data.body_xpos[i]), rot=np.array(data.body_xmat[i]).reshape(3, 3),
                           half_size=self._half_sizes[n].copy())
            for n, i in self._body_ids.items()
        }
        target = self._objects[self.spec.target]
        grasped = bool(env._check_grasp(gripper=self._robot.gripper, object_geoms=target))
        touching = {n: bool(env.check_contact(target, o)) for n, o in self._objects.items() if n != self.spec.target}
        axis = np.array(data.xpos[self._finger_bodies[0]] - data.xpos[self._finger_bodies[1]])
        norm = np.linalg.norm(axis)
        axis = axis / norm if norm > 1e-9 else np.array(data.site_xmat[self._eef_site]).reshape(3, 3)[:, 1]
        return TaskState(
            task=self.task, eef_pos=np.array(data.site_xpos[self._eef_site]),
            eef_rot=np.array(data.site_xmat[self._eef_site]).reshape(3, 3),
            gripper_qpos=np.array(data.qpos[self._grip_idx]), finger_axis=axis, objects=objects,
            grasped=grasped, touching=touching, table_z=self._table_z,
            home_pos=self._home_pos.copy(), joint_positions=np.array(data.qpos[self._joint_idx]),
            joint_limits=self._joint_limits.copy(), success=self.success(), step=self._steps,
            goal_region=scene.goal_region(env, self.spec.target),
        )

    def close(self):
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            try:
                env.close()
            except Exception:  # robosuite's close touches GL objects that may already be gone
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
