"""Scene perturbations on the real simulator: visible, deterministic per seed, reversible, still solvable."""

import numpy as np
import pytest

from apo_sim.demos import DEFAULT_MAX_STEPS, rollout_expert
from apo_sim.env import SimConfigError, SimEnv
from apo_sim.expert import ScriptedExpert
from apo_sim.perturbations import PERTURBATIONS, PLACEMENT

pytestmark = pytest.mark.sim
SIZE = 64


@pytest.fixture(scope="module")
def lift():
    with SimEnv("Lift", image_size=SIZE, seed=0) as env:
        yield env


def _first_image(env, kind, seed):
    env.perturbation = kind
    return env.reset(seed=seed).image


def _changed_pixels(a, b) -> int:
    return int((np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 30).sum())


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbed_first_image_differs_and_repeats(lift, kind):
    plain = _first_image(lift, None, 11)
    perturbed = _first_image(lift, kind, 11)
    assert _changed_pixels(perturbed, plain) >= 8  # the cube alone covers about 16 pixels at 64 px
    _first_image(lift, kind, 12)  # another episode in between changes nothing
    np.testing.assert_array_equal(_first_image(lift, kind, 11), perturbed)
    np.testing.assert_array_equal(_first_image(lift, None, 11), plain)  # back to the training scene


@pytest.mark.parametrize("kind", ["background", "texture"])
def test_visual_perturbations_keep_the_scene_layout(lift, kind):
    lift.perturbation = None
    lift.reset(seed=13, render=False)
    cube = lift.task_state().objects["cube"].pos
    lift.perturbation = kind
    lift.reset(seed=13, render=False)
    np.testing.assert_allclose(lift.task_state().objects["cube"].pos, cube)
    lift.perturbation = None


def test_texture_and_background_differ_between_seeds(lift):
    for kind in ("background", "texture"):
        assert not np.array_equal(_first_image(lift, kind, 21), _first_image(lift, kind, 22))
    lift.perturbation = None


def test_unknown_perturbation_is_refused(lift):
    with pytest.raises(SimConfigError, match="unknown perturbation 'fog'"):
        lift.perturbation = "fog"
    with pytest.raises(SimConfigError, match="unknown perturbation"):
        SimEnv("Lift", render=False, perturbation="dark")
    assert lift.perturbation is None


@pytest.mark.parametrize("task,centre", [("Lift", (0.0, 0.0)), ("PickPlaceCan", (0.1, -0.25))])
def test_position_widens_the_placement_range(task, centre):
    (tx, ty) = PLACEMENT[task]["train"]
    offsets = {}
    with SimEnv(task, render=False, seed=0) as env:
        for kind in (None, "position"):
            env.perturbation = kind
            xy = []
            for seed in range(30):
                env.reset(seed=seed, render=False)
                xy.append(env.task_state().objects[env.spec.target].pos[:2] - np.asarray(centre))
            offsets[kind] = np.abs(np.array(xy))
    plain, wide = offsets[None], offsets["position"]
    assert np.all(plain[:, 0] <= tx[1] + 0.005) and np.all(plain[:, 1] <= ty[1] + 0.005)
    outside = (wide[:, 0] > tx[1] + 0.005) | (wide[:, 1] > ty[1] + 0.005)
    assert outside.sum() >= 10  # a third or more of the episodes start where training never put the object
    assert wide.std(axis=0).min() > plain.std(axis=0).max()


@pytest.mark.parametrize("task,seeds", [("Lift", [0, 1]), ("Stack", [0]), ("PickPlaceCan", [0, 1])])
def test_expert_succeeds_under_position_perturbation(task, seeds):
    with SimEnv(task, render=False, seed=0, perturbation="position") as env:
        expert = ScriptedExpert(task)
        for seed in seeds:
            assert rollout_expert(env, expert, DEFAULT_MAX_STEPS[task], seed=seed, render=False).success


def test_perturbation_applies_from_the_constructor():
    with SimEnv("PickPlaceCan", image_size=SIZE, seed=5) as plain, \
            SimEnv("PickPlaceCan", image_size=SIZE, seed=5, perturbation="background") as shifted:
        a, b = plain.render(), shifted.render()
        assert shifted.perturbation == "background" and _changed_pixels(a, b) > a.shape[0] * a.shape[1] // 4
        np.testing.assert_allclose(plain.task_state().objects["Can"].pos, shifted.task_state().objects["Can"].pos)
