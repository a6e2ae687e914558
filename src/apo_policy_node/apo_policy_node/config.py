"""The policy node's parameters as one strict dataclass (ROS-free, so it is tested without a graph).

Every parameter is read once at start (``apo_ros.params.load_parameters``): an unknown or
mistyped one stops the node with a message naming it. Where a policy may come from is fixed here
(``model_path``, ``trust_remote_code``) and never by a service request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apo_core import topics
from apo_core.errors import ConfigError


@dataclass
class PolicyNodeConfig:
    model_path: str = field(default="", metadata={
        "help": "Model store root (with versions/) or a single policy directory. The only place policies "
                "are loaded from; /apo/policy/load selects a version inside it."})
    model_version: str = field(default="", metadata={
        "help": "Version to load at start from a model store ('' = current)."})
    instruction: str = field(default="", metadata={
        "help": "Task instruction; '' = take it from the latest episode START event."})
    device: str = field(default="cpu", metadata={"help": "torch device for inference (cpu, cuda, cuda:1)."})
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads for inference."})
    image_topic: str = field(default=topics.IMAGE, metadata={"help": "Camera topic (sensor_msgs/Image)."})
    state_topic: str = field(default=topics.ROBOT_STATE, metadata={
        "help": "Robot state topic (apo_interfaces/RobotState)."})
    max_state_age_s: float = field(default=1.0, metadata={
        "help": "A robot state older than this (vs. the image) is not used."})
    store_poll_s: float = field(default=1.0, metadata={
        "help": "While no policy is loaded (empty or missing store), how often to check for a current version."})
    camera: str = field(default="", metadata={
        "help": "Name of the camera whose images image_topic carries (the simulated robot's camera in the deploy "
                "graph). A policy that records another training camera in its apo_policy.json is refused, at "
                "start and on /apo/policy/load. '' = no check."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a checkpoint under model_path to run its own Python code (transformers auto_map). "
                "Off by default: set it only for a model directory whose code you trust."})

    def validate(self) -> None:
        if not self.model_path.strip():
            raise ConfigError("model_path: parameter is empty: give a model store root or a policy directory "
                              "(-p model_path:=DIR)")
        if self.num_threads < 1:
            raise ConfigError(f"num_threads: must be >= 1, got {self.num_threads}")
        if self.store_poll_s <= 0:
            raise ConfigError(f"store_poll_s: must be > 0, got {self.store_poll_s}")
        if self.max_state_age_s <= 0:
            raise ConfigError(f"max_state_age_s: must be > 0, got {self.max_state_age_s}")
        if not self.device.strip():
            raise ConfigError("device: parameter is empty (cpu, cuda, cuda:1)")
        for name in ("image_topic", "state_topic"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name}: parameter is empty")
