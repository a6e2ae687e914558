"""Parameters of the simulator node as a strict config dataclass (ROS-free).

``sim_node`` loads its ROS parameters into :class:`SimNodeConfig` with
:func:`apo_ros.params.load_parameters`, so an unknown parameter, a wrong type or a value out of
range stops the node at start with the parameter named. The deploy graph loader
(``apo_bringup.graph``) checks the parameter names of ``config/deploy.yaml`` against the same class,
which is why it lives here and not in the node module (no rclpy, no robosuite import).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from apo_core.errors import ConfigError
from apo_sim.env import DEFAULT_CAMERA, DEFAULT_CONTROL_FREQ, DEFAULT_IMAGE_SIZE, TASKS

MODES = ("realtime", "lockstep")


@dataclass
class SimNodeConfig:
    task: str = field(default="Lift", metadata={"help": f"robosuite task, one of {sorted(TASKS)}"})
    image_size: int = field(default=DEFAULT_IMAGE_SIZE,
                            metadata={"help": "camera image width and height (pixels, 16..1024)"})
    camera: str = field(default=DEFAULT_CAMERA, metadata={"help": "robosuite camera name (a camera of the scene)"})
    control_rate_hz: float = field(default=10.0, metadata={
        "help": "realtime mode: wall-clock control ticks per second (> 0)"})
    sim_control_freq: float = field(default=DEFAULT_CONTROL_FREQ, metadata={
        "help": "robosuite control_freq: simulated control steps per simulated second, 1..500 (keep equal "
                "to the demonstrations' --control-freq so actions mean the same)"})
    mode: Literal["realtime", "lockstep"] = field(default="realtime", metadata={
        "help": "realtime: timer-driven steps; lockstep: one step per command"})
    seed: int = field(default=-1, metadata={
        "help": "seed of the first episode (episode i uses seed+i); negative = unseeded"})
    instruction: str = field(default="", metadata={
        "help": "task instruction ('' = the task's own)"})
    publish_expert: bool = field(default=True, metadata={
        "help": "publish the scripted expert's action on the SIM_EXPERT_ACTION topic"})
    frame_id: str = field(default="apo_sim_base", metadata={"help": "header frame_id of every published message"})
    command_timeout_s: float = field(default=0.5, metadata={
        "help": "realtime mode: a command older than this (s) is replaced by zero motion (> 0)"})

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task: unknown task {self.task!r}; apo_sim supports {sorted(TASKS)}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"image_size: {self.image_size} is outside 16..1024 pixels")
        if not 1.0 <= self.sim_control_freq <= 500.0:
            raise ConfigError(f"sim_control_freq: {self.sim_control_freq} is outside 1..500 Hz")
        for name in ("control_rate_hz", "command_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive number, got {value!r}")
        if self.instruction and not self.instruction.strip():
            raise ConfigError("instruction: must not be blank ('' = the task's own)")
        # Resolved here so that the effective value is what the node declares and logs.
        self.instruction = self.instruction or TASKS[self.task].instruction
