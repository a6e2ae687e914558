"""The evaluators show a policy the camera it was trained on, and refuse another one."""

import pytest

from apo_core.errors import ConfigError
from apo_core.policy import load_policy
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_sim.pool_eval import PoolEvaluator, evaluate_pooled
from apo_sim.rollout import camera_env_kwargs, evaluate_policy

pytestmark = pytest.mark.sim

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})
WRIST = "robot0_eye_in_hand"


@pytest.fixture(scope="module")
def wrist_policy(tmp_path_factory):
    policy = SmallVLAPolicy.create(state_dim=9, seed=3, **TINY)
    policy.camera = WRIST  # what training on wrist-camera demos records
    directory = policy.save(tmp_path_factory.mktemp("camera") / "wrist")
    loaded = load_policy(directory)
    assert loaded.camera == WRIST
    return directory


def test_another_camera_is_refused_before_any_simulator_runs(wrist_policy):
    for evaluate in (evaluate_policy, evaluate_pooled):
        with pytest.raises(ConfigError, match=f"trained on images of camera '{WRIST}'.*'agentview'"):
            evaluate(wrist_policy, "Lift", seeds=[1], max_steps=2, env_kwargs={"camera": "agentview"})
    with PoolEvaluator("Lift", image_size=32, envs=1, processes=1) as ev:  # a pool of the default camera
        with pytest.raises(ConfigError, match=f"camera:={WRIST}"):
            ev.evaluate(wrist_policy, [1], max_steps=2)


def _first_image_seen(policy):
    """The policy, made to keep the first image it is shown (a probe, not a stand-in: it still acts)."""
    seen = []
    act = policy.predict

    def predict(obs):
        if not seen:
            seen.append(obs.image.copy())
        return act(obs)
    policy.predict = predict
    return policy, seen


def test_without_a_camera_given_the_policy_sees_its_own(wrist_policy):
    implicit, implicit_seen = _first_image_seen(load_policy(wrist_policy))
    explicit, explicit_seen = _first_image_seen(load_policy(wrist_policy))
    unnamed, default_seen = _first_image_seen(load_policy(wrist_policy))
    unnamed.camera = None  # the same weights with no camera recorded get the simulator's default view
    evaluate_policy(implicit, "Lift", seeds=[3], max_steps=2)
    evaluate_policy(explicit, "Lift", seeds=[3], max_steps=2, env_kwargs={"camera": WRIST})
    evaluate_policy(unnamed, "Lift", seeds=[3], max_steps=2)
    assert (implicit_seen[0] == explicit_seen[0]).all()
    assert (implicit_seen[0] != default_seen[0]).any()
    assert camera_env_kwargs(load_policy(wrist_policy), None) == {"camera": WRIST}  # what evaluate_pooled uses
    assert camera_env_kwargs(unnamed, {"render": False}) == {"render": False}
    pooled = evaluate_pooled(wrist_policy, "Lift", seeds=[3, 8], max_steps=4, envs=2, processes=1)
    sequential = evaluate_policy(wrist_policy, "Lift", seeds=[3, 8], max_steps=4, env_kwargs={"camera": WRIST})
    assert [r.to_dict() for r in pooled.records] == [r.to_dict() for r in sequential.records]
