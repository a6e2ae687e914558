"""bench/interpolate_policy.py: the weights between a base and a retrained policy, loadable as a policy."""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from apo_core.policy import load_policy
from apo_core.policy.small_vla import SmallVLAPolicy

TOOL = Path(__file__).resolve().parents[1] / "bench" / "interpolate_policy.py"
TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


def _tool():
    spec = importlib.util.spec_from_file_location("interpolate_policy", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interpolated_weights_lie_between_and_load(tmp_path):
    tool = _tool()
    base = SmallVLAPolicy.create(seed=1, **TINY).save(tmp_path / "base")
    retrained = SmallVLAPolicy.create(seed=2, **TINY).save(tmp_path / "retrained")
    wb, wr = load_file(base / "model.safetensors"), load_file(retrained / "model.safetensors")
    for alpha, expect in ((0.0, wb), (1.0, wr)):
        out = load_file(tool.interpolate(base, retrained, tmp_path / f"a{alpha}", alpha) / "model.safetensors")
        assert all(torch.equal(out[k], expect[k]) for k in expect)
    half = tool.interpolate(base, retrained, tmp_path / "half", 0.5)
    w = load_file(half / "model.safetensors")
    name = next(k for k, t in wb.items() if t.is_floating_point() and not torch.equal(t, wr[k]))
    torch.testing.assert_close(w[name], (wb[name] + wr[name]) / 2)
    assert load_policy(half).version == "half"


def test_different_architectures_and_bad_alpha_are_refused(tmp_path):
    tool = _tool()
    base = SmallVLAPolicy.create(seed=1, **TINY).save(tmp_path / "base")
    other = SmallVLAPolicy.create(seed=1, **{**TINY, "vision": {"embedding_size": 8, "hidden_sizes": [8, 16, 32]}})
    other = other.save(tmp_path / "other")
    with pytest.raises(ValueError, match="shape"):
        tool.interpolate(base, other, tmp_path / "out", 0.5)
    with pytest.raises(ValueError, match="alpha"):
        tool.interpolate(base, base, tmp_path / "out", 1.5)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        tool.interpolate(base, tmp_path, tmp_path / "out", 0.5)
    assert not (tmp_path / "out").exists()
