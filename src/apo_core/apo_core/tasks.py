"""The simulated tasks' own instructions and episode step limits: one table, no ROS, no simulator.

apo_sim's task registry (:data:`apo_sim.env.TASKS`) takes its instructions and step limits from here,
and so does the arbiter (apo_intervention), which must not import the simulator (the robot may be
real): an empty ``instruction`` means the task's own, and ``max_episode_steps: -1`` its limit below.
A task that is not in this table (a real robot's) needs both given explicitly.

Step limits count control steps at apo_sim's simulated 20 Hz. The scripted expert needs about 45
steps for Lift, about 110 for Stack and 112 (median, up to about 250) for PickPlaceCan; the limits
leave room for a policy that is slower than the expert and for the operator's corrections.
"""

from __future__ import annotations

from dataclasses import dataclass

from apo_core.errors import ConfigError


@dataclass(frozen=True)
class TaskDefaults:
    instruction: str  # what the policy is told (the small VLA was trained on these words)
    max_episode_steps: int  # an episode longer than this ends as a failure


TASK_DEFAULTS: dict[str, TaskDefaults] = {
    "Lift": TaskDefaults("lift the red cube", 150),
    "Stack": TaskDefaults("stack the red cube on the green cube", 250),
    "PickPlaceCan": TaskDefaults("put the can in the bin on the right", 250),
}


def task_defaults(task: str, what: str = "the task's defaults") -> TaskDefaults:
    """The defaults of ``task``; a ConfigError naming ``what`` was asked for if it has none."""
    try:
        return TASK_DEFAULTS[task]
    except KeyError:
        raise ConfigError(f"{what}: task {task!r} has no default (known tasks: {', '.join(TASK_DEFAULTS)}); "
                          "give it explicitly") from None


def default_instruction(task: str) -> str:
    return task_defaults(task, "instruction").instruction


def default_episode_steps(task: str) -> int:
    return task_defaults(task, "max_episode_steps").max_episode_steps
