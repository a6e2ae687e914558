"""LeRobot / openpi π0-FAST checkpoint directories: ``load_policy`` recognises them and, when a LeRobot one
lacks its local tokenizers (or is an openpi one), refuses with what the directory holds and lacks. The
checkpoints here are tiny, randomly initialised PaliGemma models saved in each project's layout; nothing
is downloaded. Running a complete one: test_pi0fast_lerobot.py."""

import json

import pytest
import torch
from safetensors.torch import save_file

from apo_core.errors import ConfigError, MissingPathError
from apo_core.policy import load_policy
from apo_core.policy.factory import read_policy_meta
from apo_core.policy.pi0fast_checkpoint import UnsupportedCheckpointError, detect_pi0fast_checkpoint

NORMALIZER = "policy_preprocessor_step_3_normalizer_processor.safetensors"
UNNORMALIZER = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """Tokenizers are also looked for in the Hugging Face cache: make it an empty one."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def _tiny_paligemma_weights() -> dict[str, torch.Tensor]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    cfg = PaliGemmaConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14, projection_dim=16),
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, vocab_size=400),
        projection_dim=16, vocab_size=400)
    model = PaliGemmaForConditionalGeneration(cfg)
    # LeRobot's PI0FastPolicy holds the PaliGemma under model.paligemma_with_expert.paligemma
    return {f"model.paligemma_with_expert.paligemma.{k}": v.contiguous().clone()
            for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def weights():
    return _tiny_paligemma_weights()


def _lerobot_checkpoint(directory, weights, *, with_model=True, with_states=True):
    directory.mkdir(parents=True)
    config = {"type": "pi0_fast", "chunk_size": 4, "n_action_steps": 4, "max_action_tokens": 32,
              "paligemma_variant": "gemma_300m", "text_tokenizer_name": "google/paligemma-3b-pt-224",
              "action_tokenizer_name": "lerobot/fast-action-tokenizer", "fast_skip_tokens": 128}
    (directory / "config.json").write_text(json.dumps(config))
    if with_model:
        save_file(weights, str(directory / "model.safetensors"))
    for name, state, registry in (("policy_preprocessor", NORMALIZER, "normalizer_processor"),
                                  ("policy_postprocessor", UNNORMALIZER, "unnormalizer_processor")):
        (directory / f"{name}.json").write_text(json.dumps({"name": name, "steps": [
            {"registry_name": registry, "config": {}, "state_file": state}]}))
        if with_states:
            save_file({"action.mean": torch.zeros(7), "action.std": torch.ones(7)}, str(directory / state))
    return directory


def test_a_lerobot_pi0fast_checkpoint_is_recognised_and_refused_precisely(tmp_path, weights):
    ckpt = _lerobot_checkpoint(tmp_path / "pi0fast", weights)
    found = detect_pi0fast_checkpoint(ckpt)
    assert found is not None and found.layout == "lerobot"
    assert found.details["chunk_size"] == 4
    assert found.details["parameters"] == sum(v.numel() for v in weights.values())
    assert set(found.present) == {"config.json", "model.safetensors", "policy_preprocessor.json",
                                  "policy_postprocessor.json", NORMALIZER, UNNORMALIZER}
    # The two tokenizers are Hub ids in the config, not files of the directory.
    assert found.missing == ["action_tokenizer_name 'lerobot/fast-action-tokenizer' (a Hub id, not a local directory)",
                             "text_tokenizer_name 'google/paligemma-3b-pt-224' (a Hub id, not a local directory)"]
    with pytest.raises(UnsupportedCheckpointError) as err:
        load_policy(ckpt)
    message = str(err.value)
    for part in ("lerobot π0-FAST checkpoint", "chunk_size 4", "PaliGemma", "policy.architecture: chunked_vla",
                 "missing: action_tokenizer_name"):
        assert part in message
    assert isinstance(err.value, ConfigError)  # the CLI and the policy node report it as a config error
    with pytest.raises(UnsupportedCheckpointError):
        read_policy_meta(ckpt)  # the policy node reads the kind first: the same refusal


def test_an_incomplete_lerobot_checkpoint_names_the_missing_files(tmp_path, weights):
    ckpt = _lerobot_checkpoint(tmp_path / "partial", weights, with_model=False, with_states=False)
    with pytest.raises(UnsupportedCheckpointError, match=r"missing: model\.safetensors, " + NORMALIZER):
        load_policy(ckpt)


def test_openpi_checkpoints_are_recognised(tmp_path, weights):
    jax_ckpt = tmp_path / "openpi"
    (jax_ckpt / "params").mkdir(parents=True)
    (jax_ckpt / "params" / "_METADATA").write_text("{}")
    (jax_ckpt / "assets" / "droid").mkdir(parents=True)
    (jax_ckpt / "assets" / "droid" / "norm_stats.json").write_text(json.dumps({"norm_stats": {}}))
    with pytest.raises(UnsupportedCheckpointError, match=r"openpi π0 / π0-FAST checkpoint.*"
                                                         r"present: params/ \(orbax\), assets/droid/norm_stats.json; "
                                                         r"missing: params/manifest.ocdbt"):
        load_policy(jax_ckpt)

    torch_ckpt = tmp_path / "openpi_pytorch"
    (torch_ckpt / "assets").mkdir(parents=True)
    save_file(weights, str(torch_ckpt / "model.safetensors"))
    with pytest.raises(UnsupportedCheckpointError, match=r"openpi-pytorch .* present: model.safetensors; "
                                                         r"missing: assets/<asset id>/norm_stats.json"):
        load_policy(torch_ckpt)


def test_other_directories_are_not_mistaken_for_one(tmp_path, weights):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"type": "act", "chunk_size": 4}))
    save_file(weights, str(plain / "model.safetensors"))  # no assets/: not openpi either
    assert detect_pi0fast_checkpoint(plain) is None
    with pytest.raises(MissingPathError, match="holds no APO policy"):
        load_policy(plain)
    (plain / "config.json").write_text("{not json")
    assert detect_pi0fast_checkpoint(plain) is None
