"""Random-shift augmentation: exact shifts, edge padding, per-sample offsets, and where it is allowed."""

import numpy as np
import pytest

from apo_core.errors import ConfigError
from apo_trainer.augment import random_shift
from apo_trainer.config import load_train_config


def test_each_image_is_a_shifted_copy_with_edge_padding():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 12, 10, 3), dtype=np.uint8)
    out = random_shift(images, 2, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(out[i], padded[i, dy : dy + 12, dx : dx + 10])]
        assert found, f"image {i} is not a shift of its input"
        offsets.add(found[0])
    assert len(offsets) > 1  # offsets are drawn per sample
    assert random_shift(images, 0, rng) is images


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="B, H, W, C"):
        random_shift(np.zeros((4, 4, 3), np.uint8), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(np.zeros((1, 4, 4, 3), np.uint8), -1, np.random.default_rng(0))


def test_image_shift_is_for_bc_only(tmp_path):
    common = {"output_dir": str(tmp_path), "data": {"paths": ["x.h5"], "image_shift": 4}}
    cfg = load_train_config(None, overrides={**common, "loss": {"name": "bc"}, "lora": {"enabled": False}})
    assert cfg.data.image_shift == 4
    with pytest.raises(ConfigError, match="image_shift is for loss bc only"):
        load_train_config(None, overrides={**common, "policy": {"path": "p"}, "loss": {"name": "apo"}})
    with pytest.raises(ConfigError, match="image_shift must be >= 0"):
        load_train_config(None, overrides={**common, "data": {"paths": ["x.h5"], "image_shift": -1},
                                           "loss": {"name": "bc"}, "lora": {"enabled": False}})
