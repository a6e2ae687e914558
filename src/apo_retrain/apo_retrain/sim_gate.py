"""The simulated promotion gate's evaluator, handed to the ROS-free RetrainManager.

apo_trainer installs on a GPU box without a simulator, so it never imports one; this module is where the
deploy side wires apo_sim in. apo_sim (robosuite) is imported on the first rollout only: a deployment on
a real robot gates on the held-out L1 and never needs it installed.
"""

from __future__ import annotations


def sim_success_rate(policy_dir, *, task: str, episodes: int, seed: int, max_steps: int | None) -> float:
    """Success rate of the policy in ``policy_dir`` over ``episodes`` simulated episodes from ``seed`` on."""
    from apo_sim.rollout import success_rate

    return success_rate(policy_dir, task=task, episodes=episodes, seed=seed, max_steps=max_steps)
