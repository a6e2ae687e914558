"""Config schemas of the intervention nodes and how a node's config is assembled (ROS-free).

A node's configuration is: the YAML file named by its ``config_file`` parameter (default: the shipped
``share/apo_intervention/config/<node>.yaml``), then any ROS parameters given to the node on top
(``-p teleop.timeout:=0.3`` or a ``--params-file``; dotted names address nested sections). The merged
mapping goes through ``apo_core.config.load_config``, so an unknown key or a wrong type fails at
start with the dotted key named. Field defaults below are the documented defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from apo_core.config import load_config, merge_overrides, nest_dotted, read_yaml
from apo_core.errors import ConfigError, MissingPathError
from apo_core.tasks import default_episode_steps, default_instruction
from apo_intervention.validation import check_limits

PACKAGE = "apo_intervention"
ACTION_DIM = 7


def _unit(value: float) -> list[float]:
    return [value] * ACTION_DIM


# --------------------------------------------------------------------------------------------------
# arbiter
@dataclass
class InputConfig:
    """One mux input, as in twist_mux: active while its newest valid message is younger than timeout."""

    priority: int = 10
    # Seconds, judged by the arbiter's receive time (not header stamps: clocks of other hosts differ).
    timeout: float = 0.5

    def check(self, where: str) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"{where}.timeout: must be > 0 s, got {self.timeout}")


@dataclass
class ArbiterConfig:
    # tick: a command (and, in an episode, a step) every 1/control_rate_hz s, the newest action re-executed
    # until it goes stale. event: a command as soon as a new action of the winning input arrives, at most
    # max_rate_hz; the control tick is then the watchdog (hold, e-stop, deadman, episode limits).
    publish_mode: Literal["event", "tick"] = "event"
    control_rate_hz: float = 20.0
    # event mode's ceiling on commands per second (0 = control_rate_hz, so an episode never has more
    # steps per second than in tick mode); an action arriving sooner waits, and the newest one wins.
    max_rate_hz: float = 0.0
    action_dim: int = ACTION_DIM
    # Per-dimension limits; anything outside is clamped (and counted) before it can reach /apo/command.
    action_low: list[float] = field(default_factory=lambda: _unit(-1.0))
    action_high: list[float] = field(default_factory=lambda: _unit(1.0))
    policy: InputConfig = field(default_factory=lambda: InputConfig(priority=10, timeout=0.5))
    teleop: InputConfig = field(default_factory=lambda: InputConfig(priority=100, timeout=0.2))
    # Index of the gripper in the action (-1: none). In hold and e-stop every other dimension is 0.
    gripper_index: int = 6
    # keep_last: the gripper keeps its last commanded value in hold/e-stop (a grasped object is not
    # dropped because the policy paused); value: hold_gripper_value is commanded instead.
    hold_gripper: Literal["keep_last", "value"] = "keep_last"
    # Also the gripper value of a hold before any command was ever executed.
    hold_gripper_value: float = -1.0
    task: str = "Lift"
    # Sent with START when the request has none; "" = the task's own (apo_core.tasks, the instruction the
    # simulator's task and its demonstrations use). A task not listed there needs one given.
    instruction: str = ""
    # Steps per episode before it is ended with timeout_outcome (0 = no limit, -1 = the task's default
    # in apo_core.tasks: Lift 150, Stack 250, PickPlaceCan 250).
    max_episode_steps: int = 300
    timeout_outcome: Literal["failure", "abort"] = "failure"
    # End the episode with SUCCESS when the robot driver reports task_success (simulation).
    end_on_success: bool = True
    # hold: the policy drives the robot only inside an episode (ending or aborting one stops the arm; a
    # human's teleop still drives between episodes). run: the policy drives whenever its actions are
    # fresh, episode or not (measuring the bare loop, a simulator left to run).
    policy_outside_episodes: Literal["hold", "run"] = "hold"
    episode_id_prefix: str = "ep"
    diagnostics_period: float = 1.0

    def validate(self) -> None:
        if self.control_rate_hz <= 0:
            raise ConfigError(f"control_rate_hz: must be > 0, got {self.control_rate_hz}")
        if self.max_rate_hz < 0:
            raise ConfigError(f"max_rate_hz: must be > 0, or 0 for control_rate_hz, got {self.max_rate_hz}")
        if self.action_dim <= 0:
            raise ConfigError(f"action_dim: must be > 0, got {self.action_dim}")
        for key in ("action_low", "action_high"):
            if len(getattr(self, key)) != self.action_dim:
                raise ConfigError(f"{key}: needs action_dim={self.action_dim} values, got {len(getattr(self, key))}")
        check_limits(self.action_low, self.action_high)
        for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high, strict=True)):
            if i != self.gripper_index and not lo <= 0.0 <= hi:
                raise ConfigError(f"action_low/action_high[{i}]: [{lo}, {hi}] must contain 0 (hold = zero motion)")
        self.policy.check("policy")
        self.teleop.check("teleop")
        if self.teleop.priority <= self.policy.priority:
            raise ConfigError(f"teleop.priority ({self.teleop.priority}) must be above policy.priority "
                              f"({self.policy.priority}): the human always takes over")
        if not -1 <= self.gripper_index < self.action_dim:
            raise ConfigError(f"gripper_index: must be -1 or in [0, {self.action_dim}), got {self.gripper_index}")
        if self.gripper_index >= 0:
            lo, hi = self.action_low[self.gripper_index], self.action_high[self.gripper_index]
            if not lo <= self.hold_gripper_value <= hi:
                raise ConfigError(f"hold_gripper_value: {self.hold_gripper_value} is outside the gripper "
                                  f"limits [{lo}, {hi}]")
        if self.max_episode_steps < -1:
            raise ConfigError(f"max_episode_steps: must be >= 0 (0 = no limit) or -1 (the task's default), got "
                              f"{self.max_episode_steps}")
        if self.instruction and not self.instruction.strip():
            raise ConfigError("instruction: must not be blank ('' = the task's own)")
        self.effective_instruction()  # a task without defaults fails here, at start
        self.effective_max_episode_steps()
        if self.diagnostics_period <= 0:
            raise ConfigError(f"diagnostics_period: must be > 0 s, got {self.diagnostics_period}")
        if not self.episode_id_prefix or not all(c.isalnum() or c in "-_" for c in self.episode_id_prefix):
            raise ConfigError(f"episode_id_prefix: use letters, digits, '-' or '_', got {self.episode_id_prefix!r}")

    def effective_max_rate_hz(self) -> float:
        """``max_rate_hz``, or ``control_rate_hz`` when it is 0."""
        return self.max_rate_hz or self.control_rate_hz

    def effective_instruction(self) -> str:
        """``instruction``, or the task's own when it is empty."""
        return self.instruction or default_instruction(self.task)

    def effective_max_episode_steps(self) -> int:
        """``max_episode_steps``, or the task's default when it is -1 (0 = no limit)."""
        return default_episode_steps(self.task) if self.max_episode_steps == -1 else self.max_episode_steps


# --------------------------------------------------------------------------------------------------
# joystick
@dataclass
class JoyMappingConfig:
    """sensor_msgs/Joy -> action, in the manner of teleop_twist_joy but per action dimension.

    ``action[i] = offset[i] + scale[i] * deadzoned(axes[axis[i]])``; ``axis[i] = -1`` leaves the
    dimension at ``offset[i]``. Button indices of -1 are unassigned. The default targets an Xbox pad
    under the ``joy`` driver: left stick x/y, right stick z/yaw, d-pad roll/pitch, right trigger
    gripper (released = open, pressed = close), LB = deadman, Start/A/B/Back = episode buttons.
    """

    action_dim: int = ACTION_DIM
    axis: list[int] = field(default_factory=lambda: [1, 0, 4, 6, 7, 3, 5])
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0])
    offset: list[float] = field(default_factory=lambda: _unit(0.0))
    # Stick values with |x| < deadzone read as 0; beyond it the range is rescaled to stay continuous.
    deadzone: float = 0.05
    deadman_button: int = 4
    start_button: int = 7
    success_button: int = 0
    failure_button: int = 1
    abort_button: int = 6
    # Publishes true on /apo/estop (the lock is released only through the arbiter's service).
    estop_button: int = 8
    # Instruction sent with START ("" = the arbiter's configured instruction).
    instruction: str = ""

    def validate(self) -> None:
        if self.action_dim <= 0:
            raise ConfigError(f"action_dim: must be > 0, got {self.action_dim}")
        for key in ("axis", "scale", "offset"):
            if len(getattr(self, key)) != self.action_dim:
                raise ConfigError(f"{key}: needs action_dim={self.action_dim} values, got {len(getattr(self, key))}")
        _check_indices(((f"axis[{i}]", a, i) for i, a in enumerate(self.axis)), unmapped="unmapped",
                       index="an axis index", taken=lambda a, dim: f"axis {a} already drives dimension {dim}")
        for i, s in enumerate(self.scale):
            if self.axis[i] >= 0 and s == 0:
                raise ConfigError(f"scale[{i}]: must not be 0 for a mapped axis")
        if not 0.0 <= self.deadzone < 1.0:
            raise ConfigError(f"deadzone: must be in [0, 1), got {self.deadzone}")
        if self.deadman_button < 0:
            raise ConfigError(f"deadman_button: must be a button index, got {self.deadman_button}")
        _check_indices(((key, getattr(self, key), key) for key in self.button_keys()), unmapped="unassigned",
                       index="a button index", taken=lambda b, key: f"button {b} is already {key}")

    @staticmethod
    def button_keys() -> tuple[str, ...]:
        return ("deadman_button", "start_button", "success_button", "failure_button", "abort_button",
                "estop_button")


def _check_indices(entries, *, unmapped: str, index: str, taken) -> None:
    """Each ``(where, value, owner)`` of ``entries``: -1 leaves it unassigned, otherwise ``value`` is an index
    (a joystick axis or button) that no earlier entry uses; ``taken(value, first owner)`` words a clash."""
    seen = {}
    for where, value, owner in entries:
        if value < -1:
            raise ConfigError(f"{where}: must be -1 ({unmapped}) or {index}, got {value}")
        if value >= 0 and value in seen:
            raise ConfigError(f"{where}: {taken(value, seen[value])}")
        if value >= 0:
            seen[value] = owner


# --------------------------------------------------------------------------------------------------
# keyboard
@dataclass
class KeyboardConfig:
    action_dim: int = ACTION_DIM
    # Magnitude a motion key commands on its dimension (raw command units).
    speed: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 1.0])
    # A key keeps its motion this long (s); terminal auto-repeat refreshes it while the key is held.
    key_hold_time: float = 0.15
    # TELEOP_ACTION rate while in takeover (s^-1).
    publish_rate_hz: float = 20.0
    gripper_index: int = 6
    instruction: str = ""

    def validate(self) -> None:
        if len(self.speed) != self.action_dim:
            raise ConfigError(f"speed: needs action_dim={self.action_dim} values, got {len(self.speed)}")
        if self.action_dim < 7:
            raise ConfigError(f"action_dim: the keyboard layout drives 7 dimensions, got {self.action_dim}")
        if self.key_hold_time <= 0 or self.publish_rate_hz <= 0:
            raise ConfigError("key_hold_time and publish_rate_hz: must be > 0")
        if not -1 <= self.gripper_index < self.action_dim:
            raise ConfigError(f"gripper_index: must be -1 or in [0, {self.action_dim}), got {self.gripper_index}")


# --------------------------------------------------------------------------------------------------
# scripted operator
@dataclass
class OperatorConfig:
    """The simulated supervisor. Steps are counted in SIM_TASK_PROGRESS messages (one per sim step)."""

    # Episodes to start (0 = keep going) and the pause (s) between an END and the next start press.
    num_episodes: int = 10
    pause_between_episodes: float = 1.0
    autostart: bool = True
    # Press start again if no START event arrived this long (s) after a press.
    start_retry_timeout: float = 5.0
    # Never intervene in the first grace_steps steps of an episode or within cooldown_steps of a handback.
    grace_steps: int = 10
    cooldown_steps: int = 10
    # Takeover triggers. Stall: best progress not improved by min_progress_delta for stall_steps steps.
    stall_steps: int = 25
    min_progress_delta: float = 0.01
    # Regress: progress below the best seen since watching (re)started by more than regress_threshold.
    regress_threshold: float = 0.15
    # Drop: the object was grasped and is not any more.
    detect_drop: bool = True
    # Away: the policy's translation points away from the expert's (cosine < away_cosine) for away_steps
    # consecutive steps (0 = off: a different but valid route would trigger it).
    away_steps: int = 0
    away_cosine: float = -0.2
    # Handback: after at least min_correction_steps, once progress rose handback_progress_gain above
    # its level at the takeover; in any case after max_correction_steps.
    min_correction_steps: int = 10
    max_correction_steps: int = 60
    handback_progress_gain: float = 0.2
    # Interventions per episode (0 = unlimited).
    max_interventions: int = 0
    # Joy mapping shared with apo_joy_teleop ("" = the shipped joy_teleop.yaml); axes come from its inverse.
    joy_config_file: str = ""
    # Expert actions older than this (s) are not sent (the deadman stays held with zero motion).
    expert_timeout: float = 0.5
    # While correcting, Joy is re-sent at this rate (like the joy driver's auto-repeat) besides once per
    # expert action, so a simulator slower than the arbiter's teleop timeout cannot make it flicker.
    joy_rate_hz: float = 20.0

    def validate(self) -> None:
        for key in ("num_episodes", "grace_steps", "cooldown_steps", "away_steps", "max_interventions"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("stall_steps", "min_correction_steps", "max_correction_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.max_correction_steps < self.min_correction_steps:
            raise ConfigError("max_correction_steps: must be >= min_correction_steps")
        for key in ("pause_between_episodes", "min_progress_delta", "handback_progress_gain"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("start_retry_timeout", "regress_threshold", "expert_timeout", "joy_rate_hz"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)}")
        if not -1.0 <= self.away_cosine <= 1.0:
            raise ConfigError(f"away_cosine: must be in [-1, 1], got {self.away_cosine}")


# --------------------------------------------------------------------------------------------------
CONFIG_FILES = {
    ArbiterConfig: "arbiter.yaml",
    JoyMappingConfig: "joy_teleop.yaml",
    KeyboardConfig: "keyboard_teleop.yaml",
    OperatorConfig: "scripted_operator.yaml",
}


def config_dir() -> Path:
    """``share/apo_intervention/config`` of an installed package, else the source tree's ``config/``."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / "config"
        if installed.is_dir():
            return installed
    except Exception:  # no ament index (plain pip install): fall back to the source tree
        pass
    source = Path(__file__).resolve().parent.parent / "config"
    if source.is_dir():
        return source
    raise MissingPathError(f"cannot find the {PACKAGE} config directory (looked in the ament index and {source})")


def default_config_path(cls) -> Path:
    return config_dir() / CONFIG_FILES[cls]


def read_config_file(path) -> dict:
    """A plain mapping, or a ROS params file (``<node or /**>: {ros__parameters: {...}}``) unwrapped."""
    data = read_yaml(path)
    if len(data) == 1:
        (only,) = data.values()
        if isinstance(only, dict) and set(only) == {"ros__parameters"}:
            return only["ros__parameters"] or {}
    return data


def assemble_config(cls, config_file: str | os.PathLike | None = None, overrides: dict | None = None):
    """File (or the shipped default) + dotted overrides -> validated ``cls`` instance.

    Errors name the file and the dotted key.
    """
    path = Path(config_file) if config_file else default_config_path(cls)
    # Start from the defaults so a partly given section keeps the defaults of its other keys
    # (``teleop: {timeout: 0.3}`` keeps teleop's priority 100, not InputConfig's plain default).
    data = merge_overrides(dataclasses.asdict(cls()), read_config_file(path))
    if overrides:
        data = merge_overrides(data, nest_dotted(overrides))
    try:
        return load_config(cls, data)
    except ConfigError as exc:
        where = f"{path} with parameter overrides {sorted(overrides)}" if overrides else str(path)
        raise ConfigError(f"{where}: {exc}") from exc
