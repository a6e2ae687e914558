"""The OpenVLA loader's shared logic (no 7B weights here): statistics, vocabulary, label padding, errors."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from apo_core.errors import MissingPathError
from apo_core.policy import load_policy
from apo_core.policy.base import IGNORE_INDEX
from apo_core.policy.openvla import (
    load_openvla_stats,
    openvla_action_vocab_size,
    pad_labels_for_prefix,
    remote_model_class,
)


def _write_stats(d, keys=("bridge_orig",)):
    stats = {k: {"action": {"q01": [-0.1] * 6 + [0.0], "q99": [0.1] * 6 + [1.0], "mask": [True] * 6 + [False],
                            "mean": [0.0] * 7, "std": [0.05] * 7}} for k in keys}
    (d / "dataset_statistics.json").write_text(json.dumps(stats))


def test_openvla_statistics_file_is_read(tmp_path):
    _write_stats(tmp_path)
    s = load_openvla_stats(tmp_path)
    assert s.dim == 7 and s.mask.tolist() == [True] * 6 + [False]
    assert np.allclose(s.unnormalise(np.array([1, -1, 0, 0, 0, 0, 1.0])), [0.1, -0.1, 0, 0, 0, 0, 1.0])


def test_unnorm_key_required_when_ambiguous(tmp_path):
    _write_stats(tmp_path, keys=("a", "b"))
    with pytest.raises(ValueError, match="unnorm_key"):
        load_openvla_stats(tmp_path)
    assert load_openvla_stats(tmp_path, "b").dim == 7
    with pytest.raises(ValueError, match="'c'"):
        load_openvla_stats(tmp_path, "c")


def test_missing_files_name_paths(tmp_path):
    with pytest.raises(MissingPathError, match="dataset_statistics.json"):
        load_openvla_stats(tmp_path)
    with pytest.raises(MissingPathError, match="config.json"):
        remote_model_class(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "openvla"}))
    with pytest.raises(ValueError, match="auto_map"):
        remote_model_class(tmp_path)


def test_openvla_directory_is_recognised(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "openvla", "auto_map": {}}))
    with pytest.raises(ValueError, match="auto_map"):
        load_policy(tmp_path, device="cpu")


def test_action_vocab_excludes_padding():
    cfg = SimpleNamespace(text_config=SimpleNamespace(vocab_size=32064), pad_to_multiple_of=64)
    assert openvla_action_vocab_size(cfg) == 32000


def test_label_padding_for_image_tokens():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6]])
    out = pad_labels_for_prefix(labels, 3)
    assert out.tolist() == [[IGNORE_INDEX] * 5 + [5, 6]]
