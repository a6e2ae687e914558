"""The bench's evaluation runs in the pooled evaluator and gives exactly the sequential evaluator's episodes."""

import pytest

from apo_bench.evaluation import EvaluatorCache, evaluate_seeds
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_sim.env import SimEnv
from apo_sim.rollout import evaluate_policy

pytestmark = pytest.mark.sim

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})
SEEDS = [70003, 70000, 70002]  # not sorted: records come back in the order given
MAX_STEPS = 8


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    out = []
    for name, kwargs in (("with_state", {"state_dim": 9, "seed": 3}), ("image_only", {"seed": 8})):
        p = SmallVLAPolicy.create(**kwargs, **TINY)
        p.version = name
        p.save(root / name)
        out.append(root / name)
    return out


@pytest.mark.parametrize("perturbation", [None, "position"])
def test_pooled_records_equal_sequential_ones_per_seed(policies, perturbation):
    env = SimEnv("Lift", image_size=32, perturbation=perturbation)  # the sequential evaluator's simulator
    with env, EvaluatorCache(envs=2) as pools:
        for policy_dir in policies:  # one pool serves both policies
            records = evaluate_seeds(policy_dir, "Lift", SEEDS, MAX_STEPS, perturbation=perturbation, pools=pools)
            sequential = evaluate_policy(policy_dir, "Lift", seeds=SEEDS, max_steps=MAX_STEPS, env=env)
            assert records == [{"seed": r.seed, "success": r.success, "steps": r.steps} for r in sequential.records]
            assert [r["seed"] for r in records] == SEEDS
            # The pool's full records (final hand and cube positions, exact floats) equal too: same trajectories.
            ev = pools.get("Lift", 32, 20.0, perturbation)
            full = ev.evaluate(policy_dir, SEEDS, max_steps=MAX_STEPS)
            assert [r.to_dict() for r in full.records] == [r.to_dict() for r in sequential.records]
        assert pools.started == 1 and pools.open_keys == [("Lift", 32, 20.0, perturbation, None)]


def test_the_perturbation_reaches_the_simulators(policies):
    """Position perturbation places the cube elsewhere: same seed, other final cube position."""
    with EvaluatorCache(envs=1) as pools:
        plain = pools.get("Lift", 32).evaluate(policies[1], SEEDS[:1], max_steps=0)
        moved = pools.get("Lift", 32, perturbation="position").evaluate(policies[1], SEEDS[:1], max_steps=0)
        assert plain.records[0].final["target_pos"] != moved.records[0].final["target_pos"]
        assert pools.started == 2 and len(pools.open_keys) == 2
        pools.get("Lift", 32, perturbation="texture")  # a third pool closes the least recently used one
        assert pools.open_keys == [("Lift", 32, 20.0, "position", None), ("Lift", 32, 20.0, "texture", None)]
    assert pools.open_keys == []


def test_the_camera_reaches_the_simulators(policies):
    """A run's camera (bench setting ``camera``) is what the pooled simulators render for the policy."""
    camera = "robot0_eye_in_hand"
    with SimEnv("Lift", image_size=32, camera=camera) as env, EvaluatorCache(envs=2) as pools:
        records = evaluate_seeds(policies[1], "Lift", SEEDS[:2], MAX_STEPS, pools=pools, camera=camera)
        sequential = evaluate_policy(policies[1], "Lift", seeds=SEEDS[:2], max_steps=MAX_STEPS, env=env)
        assert records == [{"seed": r.seed, "success": r.success, "steps": r.steps} for r in sequential.records]
        wrist = pools.get("Lift", 32, camera=camera).evaluate(policies[1], SEEDS[:1], max_steps=MAX_STEPS)
        front = pools.get("Lift", 32).evaluate(policies[1], SEEDS[:1], max_steps=MAX_STEPS)
        assert wrist.records[0].final["eef_pos"] != front.records[0].final["eef_pos"]  # other images, other actions
        assert pools.open_keys == [("Lift", 32, 20.0, None, camera), ("Lift", 32, 20.0, None, None)]


def test_one_shot_evaluation_without_a_cache(policies):
    records = evaluate_seeds(policies[0], "Lift", SEEDS[:2], 3, perturbation="position", workers=4)
    assert records == [{"seed": s, "success": False, "steps": 3} for s in SEEDS[:2]]
    assert evaluate_seeds(policies[0], "Lift", [], 3) == []
    with pytest.raises(ValueError, match="unknown perturbation 'wind'"):
        evaluate_seeds(policies[0], "Lift", SEEDS[:1], 3, perturbation="wind")
