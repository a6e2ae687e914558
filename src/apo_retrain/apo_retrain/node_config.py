"""The retrain node's ROS parameters as a strict config (checked without a node: this module imports no rclpy).

The node is created with ``automatically_declare_parameters_from_overrides`` and loads these with
:func:`apo_ros.params.load_parameters`: a misspelt parameter fails the start naming it, instead
of being ignored. The parameters only point at the settings file and override a few of its values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from apo_core.errors import ConfigError
from apo_trainer.retrain.requests import RetrainRequestError, check_steps

# config/deploy.yaml's robot:= values that drive a real arm (our topics, or the robot adapters): gate "real"
REAL_ROBOTS = ("real", "servo", "ros2_control")


@dataclass
class RetrainNodeConfig:
    config_file: str = field(default="", metadata={
        "help": "Retrain settings YAML (config/retrain.yaml); parameters below override it."})
    work_dir: str = field(default="", metadata={
        "help": "Datasets, job directories and the registry of used episodes ('' = file)."})
    bags_dir: str = field(default="", metadata={"help": "Where the recorder writes episode bags ('' = file)."})
    model_store: str = field(default="", metadata={"help": "Model store root (versions/ + current; '' = file)."})
    expert_data: str = field(default="", metadata={
        "help": "HDF5 of expert demonstrations trained on in every round ('' = file)."})
    lifelong_every_n_episodes: int = field(default=-1, metadata={
        "help": "Retrain automatically every N finished episodes (0 off, -1 = file)."})
    lifelong_delay_s: float = field(default=3.0, metadata={
        "help": "Wait after the N-th episode ends so the recorder can close its bag."})
    steps: int = field(default=0, metadata={"help": "Default optimiser steps (0 = file)."})
    robot: str = field(default="", metadata={
        "help": "What the deployment drives: sim or real ('' = file); with eval.gate auto, sim gates promotion "
                "on the simulated success rate, real on the held-out action L1."})
    sim_task: str = field(default="", metadata={"help": "Task of the simulated promotion gate ('' = file)."})
    sim_max_steps: int = field(default=-1, metadata={
        "help": "Episode limit of the simulated promotion gate (-1 = file, 0 = the task's default)."})

    def validate(self):
        if self.lifelong_every_n_episodes < -1:
            raise ConfigError(f"lifelong_every_n_episodes must be -1 (file), 0 (off) or a count, got "
                              f"{self.lifelong_every_n_episodes}")
        if not (math.isfinite(self.lifelong_delay_s) and 0 <= self.lifelong_delay_s <= 3600):
            raise ConfigError(f"lifelong_delay_s must be in [0, 3600] seconds, got {self.lifelong_delay_s}")
        if self.robot not in ("", "sim", *REAL_ROBOTS):
            raise ConfigError(f"robot must be sim, {', '.join(REAL_ROBOTS)} or '' (the settings file's), "
                              f"got {self.robot!r}")
        if self.sim_max_steps < -1:
            raise ConfigError(f"sim_max_steps must be -1 (file), 0 (the task's default) or a count, got "
                              f"{self.sim_max_steps}")
        try:
            check_steps(self.steps, "steps")
        except RetrainRequestError as exc:
            raise ConfigError(str(exc)) from None

    def settings_overrides(self) -> dict:
        """The values that replace the settings file's (empty / -1 / 0 mean: keep the file's; sim_max_steps 0
        is a value: the task's default)."""
        out: dict = {key: getattr(self, key) for key in ("work_dir", "bags_dir", "model_store", "expert_data")
                     if getattr(self, key)}
        if self.lifelong_every_n_episodes >= 0:
            out["lifelong_every_n_episodes"] = self.lifelong_every_n_episodes
        if self.steps > 0:
            out["defaults"] = {"steps": self.steps}
        if self.robot:
            out["robot"] = "sim" if self.robot == "sim" else "real"
        ev = {"sim_task": self.sim_task} if self.sim_task else {}
        if self.sim_max_steps >= 0:
            ev["sim_max_steps"] = self.sim_max_steps
        if ev:
            out["eval"] = ev
        return out
