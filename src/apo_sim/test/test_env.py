"""SimEnv on the real robosuite simulator: shapes, orientation, actions, seeding, errors."""

import numpy as np
import pytest

from apo_core.errors import InvalidActionError
from apo_sim.env import PROPRIO_DIM, SimConfigError, SimEnv, validate_action
from apo_sim.expert import ScriptedExpert

pytestmark = pytest.mark.sim
SIZE = 64


@pytest.fixture(scope="module")
def env():
    with SimEnv("Lift", image_size=SIZE, seed=0) as e:
        yield e


def _red_rows(image):
    img = image.astype(int)
    rows, _ = np.nonzero(img[..., 0] - np.maximum(img[..., 1], img[..., 2]) > 60)
    return rows


def test_reset_and_step_shapes(env):
    obs = env.reset(seed=1)
    assert obs.image.shape == (SIZE, SIZE, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (PROPRIO_DIM,)
    np.testing.assert_allclose(obs.proprio[:3], obs.eef_pos)
    np.testing.assert_allclose(obs.proprio[3:7], obs.eef_quat)
    np.testing.assert_allclose(obs.proprio[7:], obs.gripper_qpos)
    assert abs(np.linalg.norm(obs.eef_quat) - 1.0) < 1e-6
    assert obs.joint_positions.shape == (7,)
    assert obs.step == 0 and not obs.success
    z0 = obs.eef_pos[2]
    for _ in range(4):
        obs = env.step([0, 0, 1, 0, 0, 0, 0])
    assert obs.step == 4 and env.steps == 4
    assert obs.eef_pos[2] > z0 + 0.03  # +z input moves the hand up
    obs = env.reset()
    assert env.steps == 0 and abs(obs.eef_pos[2] - z0) < 0.02


def test_image_is_upright(env):
    """Lifting the cube in the world must move it up in the image (OpenGL rows come bottom-up)."""
    env.reset(seed=2)
    before = _red_rows(env.render())
    assert before.size > 0, "the red cube should be visible from agentview"
    expert = ScriptedExpert("Lift")
    for _ in range(150):
        state = env.task_state()
        if state.success and state.objects["cube"].pos[2] > state.table_z + 0.08:
            break
        env.step(expert.act(state), render=False)
    after = _red_rows(env.render())
    assert after.size > 0
    assert after.mean() < before.mean() - 2


def test_seeded_reset_is_reproducible(env):
    a = env.reset(seed=5)
    cube_a = env.task_state().objects["cube"].pos
    env.reset(seed=6)
    cube_b = env.task_state().objects["cube"].pos
    c = env.reset(seed=5)
    np.testing.assert_allclose(env.task_state().objects["cube"].pos, cube_a)
    np.testing.assert_allclose(c.joint_positions, a.joint_positions)
    assert not np.allclose(cube_a, cube_b)


def test_actions_are_validated(env):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="NaN or inf"):
        env.step([0, 0, np.nan, 0, 0, 0, 0])
    with pytest.raises(InvalidActionError, match="7 values"):
        env.step([0, 0, 0])
    assert env.steps == 0  # nothing was stepped
    np.testing.assert_array_equal(validate_action([5, -5, 0.5, 0, 0, 0, 2]), [1, -1, 0.5, 0, 0, 0, 1])
    env.step([0, 0, 5, 0, 0, 0, -3])  # clipped, not rejected
    assert env.steps == 1


def test_instruction_and_privileged_state(env):
    assert env.instruction == "lift the red cube"
    state = env.task_state()
    assert set(state.objects) == {"cube"} and not state.grasped
    assert state.gripper_opening > 0.0 and abs(np.linalg.norm(state.finger_axis) - 1) < 1e-6


def test_bad_configuration_is_named():
    with pytest.raises(SimConfigError, match="unknown task 'Push'.*Lift"):
        SimEnv("Push")
    with pytest.raises(SimConfigError, match="image_size"):
        SimEnv("Lift", image_size=4)
    with pytest.raises(SimConfigError, match="unknown camera 'nope'"):
        SimEnv("Lift", camera="nope", image_size=SIZE)


def test_stack_env_without_rendering():
    with SimEnv("Stack", render=False, seed=0) as env:
        obs = env.step(np.zeros(7), render=False)
        assert obs.image is None
        assert env.instruction == "stack the red cube on the green cube"
        assert set(env.task_state().objects) == {"cubeA", "cubeB"}
        with pytest.raises(SimConfigError, match="rendering is disabled"):
            env.render()
