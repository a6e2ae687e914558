"""``deployment_scenes``: demos stay in the training scenes, deployment and the main evaluation are shifted."""

import numpy as np
import pytest

from apo_bench.protocol import Protocol
from apo_bench.settings import load_bench_settings
from apo_core.config import ConfigError
from apo_core.dataset import read_episode, sorted_episode_names
from apo_core.policy.small_vla import SmallVLAPolicy

pytestmark = pytest.mark.sim

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


def _settings(scenes):
    return load_bench_settings("quick", overrides={
        "deployment_scenes": scenes, "image_size": 32, "max_steps": {"Lift": 4},
        "deploy": {"episodes": 1}, "eval": {"episodes": 2, "workers": 1}})


def test_an_unknown_kind_is_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"deployment_scenes: unknown 'floor'.*position"):
        load_bench_settings("quick", overrides={"deployment_scenes": "floor"})


def _first_image(protocol, tmp_path):
    policy_dir = protocol.policy_dir("Lift", 0, "base")
    p = SmallVLAPolicy.create(seed=3, **TINY)
    p.version = "base"
    p.save(policy_dir)
    protocol.deploy("Lift", 0, "base", 0)
    path = protocol.dataset("Lift", 0, "base")
    import h5py

    with h5py.File(path, "r") as f:
        name = sorted_episode_names(f)[0]
    return read_episode(path, name).images[0]


def test_deployment_and_evaluation_use_the_shifted_scenes(tmp_path):
    with Protocol(_settings(None), tmp_path / "plain", progress=False) as plain:
        plain_image = _first_image(plain, tmp_path)
    with Protocol(_settings("position"), tmp_path / "shift", progress=False) as shift:
        shifted_image = _first_image(shift, tmp_path)
        # the same deployment seed, the cube placed from the wide range: another first image
        assert not np.array_equal(plain_image, shifted_image)
        result = shift.evaluate("Lift", 0, "base")
        assert result["perturbation"] == "none"  # the run's own scenes, recorded as its main table
        assert [key[3] for key in shift.evaluators().open_keys] == ["position"]  # evaluated in them
