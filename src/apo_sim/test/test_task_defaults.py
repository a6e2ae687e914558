"""The task registry takes instructions and episode limits from apo_core.tasks (which the arbiter reads
without the simulator), and a rollout without max_steps runs to the task's limit."""

import pytest

from apo_core.tasks import TASK_DEFAULTS
from apo_sim.env import TASKS, SimConfigError
from apo_sim.rollout import default_max_steps, evaluate_policy


def test_registry_and_table_agree():
    assert set(TASKS) == set(TASK_DEFAULTS)
    for name, spec in TASKS.items():
        assert spec.instruction == TASK_DEFAULTS[name].instruction
        assert spec.max_episode_steps == TASK_DEFAULTS[name].max_episode_steps
    assert {n: default_max_steps(n) for n in TASKS} == {"Lift": 150, "Stack": 250, "PickPlaceCan": 250}
    assert default_max_steps("PickPlaceCan", 40) == 40
    with pytest.raises(SimConfigError, match="unknown task"):
        default_max_steps("Juggle")


@pytest.mark.sim
@pytest.mark.slow
def test_rollout_without_max_steps_runs_to_the_tasks_limit():
    from apo_core.policy.small_vla import SmallVLAPolicy

    # a random policy does not put the can in the bin: the episode ends at PickPlaceCan's 250 steps
    # (the fixed default used to be 150 for every task)
    policy = SmallVLAPolicy.create(state_dim=9, seed=3, image_size=32, text_vocab_size=320,
                                   vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
                                   text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                         "num_attention_heads": 2, "num_key_value_heads": 2})
    result = evaluate_policy(policy, "PickPlaceCan", seeds=[5])
    assert result.records[0].steps == 250 and not result.records[0].success
