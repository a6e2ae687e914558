"""Running a LeRobot pi0_fast checkpoint through ``load_policy``, offline.

Everything is built here, tiny and random, in the stored formats: a PaliGemma (tiny SigLIP + tiny Gemma)
saved under LeRobot's parameter names with LeRobot's processor pipelines and normaliser state files, a
Gemma-like text tokenizer, and a FAST processor directory in physical-intelligence's format (byte-level
BPE fitted the way its public ``fit`` does, plus a ``processing_action_tokenizer.py`` that would raise if
anything ran it). Nothing is downloaded."""

import json
import string

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from apo_core.errors import ConfigError
from apo_core.fast_tokenizer import dct_matrix
from apo_core.policy import load_policy
from apo_core.policy.base import Observation
from apo_core.policy.factory import read_policy_meta
from apo_core.policy.pi0fast_checkpoint import (
    SIDE_FILE,
    UnsupportedCheckpointError,
    detect_pi0fast_checkpoint,
)
from apo_core.policy.pi0fast_fast_processor import PiFastProcessor
from apo_core.policy.pi0fast_lerobot import (
    Pi0FastDecodeError,
    Pi0FastLeRobotPolicy,
    lerobot_prompt,
    map_lerobot_weights,
    paligemma_config_for_variant,
    preprocess_image,
)

H, D, STATE_DIM, VOCAB, SCALE = 4, 3, 2, 400, 10.0
TEXT_ID, FAST_ID = "google/paligemma-3b-pt-224", "lerobot/fast-action-tokenizer"
ACTION_MEAN = np.array([0.1, -0.2, 0.0], np.float32)
ACTION_STD = np.array([0.5, 0.25, 1.0], np.float32)
ACTION_MIN, ACTION_MAX = ACTION_MEAN - 3 * ACTION_STD, ACTION_MEAN + 3 * ACTION_STD
STATE_MEAN, STATE_STD = np.array([0.5, -1.0], np.float32), np.array([2.0, 0.5], np.float32)
TINY_PALIGEMMA = dict(
    vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=28, patch_size=14, projection_dim=16),
    text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8, vocab_size=VOCAB),
    projection_dim=16, vocab_size=VOCAB)
PROCESSOR_CODE = 'raise RuntimeError("the FAST processor code must never run")\n'


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and offline mode, so nothing is found or fetched outside the test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _smooth_chunks(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, H)[None, :, None]
    return rng.normal(0, 1, (n, 1, D)) + rng.normal(0, 0.5, (n, 1, D)) * t


def _text_tokenizer(directory):
    """A Gemma-like tokenizer: <pad> <eos> <bos> <unk> first, BOS prepended, ' ' as '▁', VOCAB base ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", "merged_with_next"),
                                                 pre_tokenizers.Punctuation("isolated")])
    tok.decoder = decoders.Replace("▁", " ")
    corpus = ["Action: |"] * 100 + ["Task: pick up the red cube, State: 12 127 255 0 64;\n"] * 10
    trainer = trainers.BpeTrainer(vocab_size=140, min_frequency=1, show_progress=False,
                                  special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation)
                                  + ["▁", "\n"])
    tok.train_from_iterator(corpus, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), VOCAB):  # a full vocabulary, as Gemma's: the FAST ids overlay its top
        vocab[f"<unused{i}>"] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(directory)
    return directory


def _fast_processor(directory, chunks):
    """physical-intelligence's stored format, fitted as its public ``fit`` does (byte-level BPE whose
    initial alphabet is every coefficient value seen, min_token the smallest)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.trainers import BpeTrainer

    q = np.around(SCALE * np.einsum("kt,ntd->nkd", dct_matrix(H), chunks)).reshape(len(chunks), -1).astype(int)
    lo, hi = int(q.min()), int(q.max())
    bpe = ByteLevelBPETokenizer()
    trainer = BpeTrainer(vocab_size=110, min_frequency=2, show_progress=False, special_tokens=[],
                         initial_alphabet=[chr(i) for i in range(hi - lo + 1)], max_token_length=10000)
    bpe._tokenizer.train_from_iterator(("".join(map(chr, row - lo)) for row in q), trainer=trainer)
    directory.mkdir(parents=True)
    bpe._tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "processor_config.json").write_text(json.dumps({
        "action_dim": None, "time_horizon": None, "min_token": lo, "scale": SCALE,
        "vocab_size": bpe._tokenizer.get_vocab_size(), "processor_class": "UniversalActionProcessor",
        "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"}}))
    (directory / "processing_action_tokenizer.py").write_text(PROCESSOR_CODE)
    return directory


def _weights() -> dict[str, torch.Tensor]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(PaliGemmaConfig(**TINY_PALIGEMMA))
    # LeRobot's PI0FastPolicy: policy.model.paligemma_with_expert.paligemma; the tied embedding is stored once
    return {f"model.paligemma_with_expert.paligemma.{k}": v.contiguous().clone()
            for k, v in model.state_dict().items() if k != "model.language_model.embed_tokens.weight"}


def _pipeline(name, steps):
    return {"name": name, "steps": steps}


def _checkpoint(root, *, side=True, fast_dir="fast", text_dir="paligemma_tokenizer"):
    ckpt = root / "pi0fast"
    ckpt.mkdir(parents=True)
    features = {"observation.images.base": {"type": "VISUAL", "shape": [3, 28, 28]},
                "observation.images.wrist": {"type": "VISUAL", "shape": [3, 28, 28]},
                "observation.state": {"type": "STATE", "shape": [STATE_DIM]},
                "action": {"type": "ACTION", "shape": [D]}}
    norm_map = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    config = {"type": "pi0_fast", "chunk_size": H, "n_action_steps": H, "max_action_tokens": 32,
              "paligemma_variant": "gemma_2b", "dtype": "float32", "image_resolution": [28, 28],
              "input_features": {k: v for k, v in features.items() if k != "action"},
              "output_features": {"action": features["action"]}, "normalization_mapping": norm_map,
              "tokenizer_max_length": 40, "text_tokenizer_name": TEXT_ID, "action_tokenizer_name": FAST_ID,
              "fast_skip_tokens": 128, "max_decoding_steps": 12, "temperature": 0.0,
              "validate_action_token_prefix": True, "use_relative_actions": False, "empty_cameras": 0}
    (ckpt / "config.json").write_text(json.dumps(config))
    save_file(_WEIGHTS, str(ckpt / "model.safetensors"))
    stats = {"observation.state.mean": STATE_MEAN, "observation.state.std": STATE_STD,
             "action.mean": ACTION_MEAN, "action.std": ACTION_STD, "action.min": ACTION_MIN, "action.max": ACTION_MAX}
    stats = {k: torch.as_tensor(v) for k, v in stats.items()}
    norm_cfg = {"eps": 1e-8, "features": features, "norm_map": norm_map}
    pre = [{"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
           {"registry_name": "to_batch_processor", "config": {}},
           {"registry_name": "normalizer_processor", "config": norm_cfg,
            "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors"},
           {"registry_name": "pi0_fast_prepare_state_tokenizer_processor_step", "config": {}},
           {"registry_name": "tokenizer_processor", "config": {"max_length": 40, "tokenizer_name": TEXT_ID,
                                                               "padding_side": "right", "padding": "max_length"}},
           {"registry_name": "action_tokenizer_processor", "config": {"action_tokenizer_name": FAST_ID}},
           {"registry_name": "device_processor", "config": {"device": "cpu"}}]
    post = [{"registry_name": "unnormalizer_processor", "config": norm_cfg,
             "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"},
            {"registry_name": "device_processor", "config": {"device": "cpu"}}]
    (ckpt / "policy_preprocessor.json").write_text(json.dumps(_pipeline("policy_preprocessor", pre)))
    (ckpt / "policy_postprocessor.json").write_text(json.dumps(_pipeline("policy_postprocessor", post)))
    save_file(stats, str(ckpt / pre[2]["state_file"]))
    save_file(stats, str(ckpt / post[0]["state_file"]))
    if side:
        entry = {"paligemma_config": TINY_PALIGEMMA}
        if text_dir:
            entry["text_tokenizer"] = f"../{text_dir}"
        if fast_dir:
            entry["action_tokenizer"] = f"../{fast_dir}"
        (ckpt / SIDE_FILE).write_text(json.dumps(entry))
    return ckpt


_WEIGHTS = _weights()


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    _text_tokenizer(root / "paligemma_tokenizer")
    normalised = (_smooth_chunks(300, 1) * 0.5)  # what MEAN_STD-normalised chunks look like
    _fast_processor(root / "fast", normalised)
    return root


@pytest.fixture
def workspace(tmp_path, tokenizers_dir):
    import shutil

    for name in ("paligemma_tokenizer", "fast"):
        shutil.copytree(tokenizers_dir / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def policy(workspace):
    return load_policy(_checkpoint(workspace))


class ScriptedHead(torch.nn.Module):
    """Stands in for the LM head: each call puts the highest logit on the next id of a script."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab, self.calls = list(script), vocab, 0

    def forward(self, hidden):
        logits = torch.zeros(hidden.shape[0], hidden.shape[1], self.vocab)
        logits[..., self.script[min(self.calls, len(self.script) - 1)]] = 1.0
        self.calls += 1
        return logits


def _obs(rng=None, state=(0.3, -1.2)):
    rng = rng or np.random.default_rng(0)
    return Observation(rng.integers(0, 256, (36, 28, 3), dtype=np.uint8), "pick up the red cube",
                       np.array(state, np.float32))


def test_load_policy_runs_a_lerobot_checkpoint_with_local_tokenizers(workspace, policy):
    ckpt = workspace / "pi0fast"
    assert read_policy_meta(ckpt) == {"kind": "lerobot_pi0fast"}
    assert isinstance(policy, Pi0FastLeRobotPolicy)
    assert (policy.action_dim, policy.chunk_size, policy.n_action_steps) == (D, H, H)
    assert policy.image_keys == ["observation.images.base", "observation.images.wrist"]
    assert policy.camera_order == policy.image_keys
    wrist = load_policy(ckpt, image_key="observation.images.wrist")
    assert wrist.camera_order == ["observation.images.wrist", "observation.images.base"]  # present first
    with pytest.raises(ConfigError, match="not a camera"):
        load_policy(ckpt, image_key="observation.images.top")
    # LeRobot stores lm_head only; it is the token embedding too
    emb = policy.paligemma.model.language_model.embed_tokens.weight
    assert torch.equal(emb, _WEIGHTS["model.paligemma_with_expert.paligemma.lm_head.weight"])
    chunk = policy.predict_chunk(_obs())
    assert chunk.shape == (H, D) and np.all(np.isfinite(chunk))
    assert np.all(chunk >= ACTION_MIN - 1e-6) and np.all(chunk <= ACTION_MAX + 1e-6)
    calls = []
    original = policy.generate_tokens
    policy.generate_tokens = lambda *a: calls.append(1) or original(*a)
    actions = [policy.predict(_obs()) for _ in range(H + 1)]
    assert len(calls) == 2  # LeRobot's select_action: a chunk per n_action_steps actions
    assert all(a.shape == (D,) and np.all(np.isfinite(a)) for a in actions)
    policy.reset()
    policy.predict(_obs())
    assert len(calls) == 3
    with pytest.raises(NotImplementedError, match="inference only"):
        policy.encode_batch(None, None)


def test_the_prompt_is_lerobots():
    # digitize(x, linspace(-1, 1, 257)[:-1]) - 1: below -1 -> -1, -1 -> 0, 0 -> 128, >= 0.9921875 -> 255
    assert lerobot_prompt(" pick_up\nthe cube ", [-1.5, -1.0, 0.0, 0.999, 1.5]) == \
        "Task: pick up the cube, State: -1 0 128 255 255;\n"


def test_the_policy_builds_the_prompt_from_the_normalised_state(policy):
    # state (0.3, -1.2) -> ((0.3 - 0.5) / 2, (-1.2 + 1) / 0.5) = (-0.1, -0.4) -> bins 115, 76
    assert policy.prompt("pick up the red cube", [0.3, -1.2]) == "Task: pick up the red cube, State: 115 76;\n"
    with pytest.raises(ValueError, match="needs the robot state"):
        policy.prompt("x", None)
    with pytest.raises(ValueError, match="state has 3 values"):
        policy.prompt("x", [0.0, 0.0, 0.0])


def test_images_are_resized_with_centred_padding_to_minus_one():
    img = np.full((56, 28, 3), 255, np.uint8)  # twice as tall: 28 x 14 after resizing, 7 columns of padding
    x = preprocess_image(img, (28, 28))
    assert x.shape == (1, 3, 28, 28)
    assert torch.all(x[..., :7] == -1) and torch.all(x[..., 21:] == -1)
    assert torch.allclose(x[..., 7:21], torch.ones(1, 3, 28, 14))
    assert torch.equal(preprocess_image(np.zeros((28, 28, 3), np.uint8), (28, 28)), -torch.ones(1, 3, 28, 28))


def test_fast_round_trip_through_the_checkpoints_tokenizers(policy):
    rng = np.random.default_rng(3)
    for raw in ACTION_MEAN + ACTION_STD * _smooth_chunks(5, 7) * 0.5:
        seq = policy.action_token_sequence(raw)
        tokens = policy.text_tokenizer.convert_ids_to_tokens(seq)
        assert tokens[:2] == ["Action", ":"] and tokens[-2:] == ["|", "<eos>"]
        codes = np.asarray(seq[len(policy._prefix_ids):-2])
        assert np.all(codes <= VOCAB - 1 - 128) and np.all(codes > VOCAB - 1 - 128 - policy.fast.vocab_size)
        decoded = policy.decode_tokens(seq)
        # rounding each DCT coefficient to 1/scale moves an element by at most 0.5/scale * sqrt(H) normalised
        bound = 0.5 / SCALE * np.sqrt(H) * ACTION_STD
        assert np.all(np.abs(decoded - raw) <= bound + 1e-6)
        # decoded exactly as the coefficients say: inverse DCT of the rounded scaled coefficients
        normalised = (raw - ACTION_MEAN) / ACTION_STD
        expected = dct_matrix(H).T @ (np.around(SCALE * dct_matrix(H) @ normalised) / SCALE)
        np.testing.assert_allclose(decoded, expected * ACTION_STD + ACTION_MEAN, atol=1e-5)
        # text after '|' is ignored, and so is a repeated 'Action: '
        noisy = list(policy._prefix_ids) + seq[:-2] + [policy._end_id] + rng.integers(0, 100, 3).tolist()
        np.testing.assert_allclose(policy.decode_tokens(noisy), decoded)
    assert policy.decode_failures == 0


def test_generation_end_to_end_with_a_scripted_head(policy):
    raw = ACTION_MEAN + ACTION_STD * _smooth_chunks(1, 11)[0] * 0.5
    seq = policy.action_token_sequence(raw)
    head = ScriptedHead(seq, VOCAB)
    policy.paligemma.lm_head = head
    chunk = policy.predict_chunk(_obs())
    assert head.calls == seq.index(policy._end_id) + 1  # greedy decoding stops at '|'
    np.testing.assert_allclose(chunk, policy.decode_tokens(seq))
    assert np.all(np.abs(chunk - raw) <= 0.5 / SCALE * np.sqrt(H) * ACTION_STD + 1e-6)


def test_malformed_generations_fall_back_safely_or_raise(workspace, policy):
    # no 'Action:' prefix: LeRobot asserts; here the zero-coefficient chunk (the mean action), counted
    policy.paligemma.lm_head = ScriptedHead([5, 6, 7], VOCAB)
    chunk = policy.predict_chunk(_obs())
    np.testing.assert_allclose(chunk, np.tile(ACTION_MEAN, (H, 1)), atol=1e-6)
    assert policy.decode_failures == 1 and "Action:" in policy.last_decode_errors[-1]
    # ids above the FAST range map to negative FAST ids: the processor cannot decode them
    bad = policy._prefix_ids + [VOCAB - 1, VOCAB - 2, policy._end_id]
    out = policy.decode_tokens(bad)
    assert np.all(np.isfinite(out)) and policy.decode_failures == 2
    # a run of the largest coefficients would leave the data's range: clipped into [min, max]
    top = int(policy.fast_to_paligemma(policy.fast.vocab_size - 1))
    huge = policy.decode_tokens(policy._prefix_ids + [top] * 12)
    assert np.all(np.isfinite(huge)) and np.all(huge >= ACTION_MIN - 1e-6) and np.all(huge <= ACTION_MAX + 1e-6)
    # a short sequence is zero-padded (missing high frequencies), as LeRobot's relaxed decoding
    assert np.all(np.isfinite(policy.decode_tokens(policy._prefix_ids + [top])))
    strict = load_policy(workspace / "pi0fast", on_error="raise")
    with pytest.raises(Pi0FastDecodeError, match="Action:"):
        strict.decode_tokens([5, 6, 7])


def test_the_fast_processor_reads_only_its_stored_files(tokenizers_dir):
    fast = PiFastProcessor.from_directory(tokenizers_dir / "fast")
    x = _smooth_chunks(1, 5)[0] * 0.5
    chunk, ok = fast.decode(fast.encode(x), H, D)
    assert ok and np.abs(chunk - x).max() <= 0.5 / SCALE * np.sqrt(H)
    zeros, ok = fast.decode([-3], H, D)
    assert not ok and np.array_equal(zeros, np.zeros((H, D)))
    zeros, ok = fast.decode([1.5], H, D)
    assert not ok


def test_missing_tokenizers_are_named(workspace):
    ckpt = _checkpoint(workspace, side=False)
    with pytest.raises(UnsupportedCheckpointError) as err:
        load_policy(ckpt)
    message = str(err.value)
    assert f"missing: action_tokenizer_name '{FAST_ID}' (a Hub id, not a local directory), text_tokenizer_name " \
           f"'{TEXT_ID}' (a Hub id, not a local directory)" in message
    assert "text_tokenizer=DIR" in message and SIDE_FILE in message


def test_a_side_file_naming_absent_or_incomplete_directories_is_refused(workspace):
    ckpt = _checkpoint(workspace, fast_dir="no_such_dir")
    with pytest.raises(UnsupportedCheckpointError, match=r"apo_pi0fast.json action_tokenizer '../no_such_dir' "
                                                         r"\(not a directory\)"):
        load_policy(ckpt)
    (workspace / "fast" / "processor_config.json").unlink()
    (ckpt / SIDE_FILE).write_text(json.dumps({"action_tokenizer": "../fast", "text_tokenizer": "../nothing",
                                              "paligemma_config": TINY_PALIGEMMA}))
    with pytest.raises(UnsupportedCheckpointError) as err:
        read_policy_meta(ckpt)
    assert "lacks processor_config.json" in str(err.value) and "'../nothing' (not a directory)" in str(err.value)


def test_explicit_directories_and_the_hf_cache_are_used(workspace, monkeypatch):
    ckpt = _checkpoint(workspace, text_dir=None, fast_dir=None)  # the side file holds only the model config
    with pytest.raises(UnsupportedCheckpointError, match="missing: action_tokenizer_name"):
        load_policy(ckpt)
    policy = load_policy(ckpt, text_tokenizer=workspace / "paligemma_tokenizer", action_tokenizer=workspace / "fast")
    assert policy.predict_chunk(_obs()).shape == (H, D)
    # the Hugging Face cache layout, as an offline transformers finds a snapshot
    import shutil

    cache = workspace / "hf_cache"
    for repo, src in ((TEXT_ID, "paligemma_tokenizer"), (FAST_ID, "fast")):
        repo_dir = cache / ("models--" + repo.replace("/", "--"))
        shutil.copytree(workspace / src, repo_dir / "snapshots" / "abc123")
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    found = detect_pi0fast_checkpoint(ckpt)
    assert found.runnable and found.tokenizers["text_tokenizer"] == cache / "models--google--paligemma-3b-pt-224" \
        / "snapshots" / "abc123"
    assert load_policy(ckpt).predict_chunk(_obs()).shape == (H, D)


def test_unsupported_settings_and_options_are_refused(workspace):
    ckpt = _checkpoint(workspace)
    with pytest.raises(ConfigError, match="unknown LeRobot pi0_fast option"):
        load_policy(ckpt, trust_remote_code=False, beam_width=3)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "use_relative_actions": True}))
    with pytest.raises(UnsupportedCheckpointError, match="not supported: use_relative_actions"):
        load_policy(ckpt)
    (ckpt / "config.json").write_text(json.dumps(config))
    side = json.loads((ckpt / SIDE_FILE).read_text())
    side["paligemma_config"] = {**TINY_PALIGEMMA, "text_config": {**TINY_PALIGEMMA["text_config"], "hidden_size": 32,
                                                                    "vocab_size": VOCAB}}
    (ckpt / SIDE_FILE).write_text(json.dumps(side))
    with pytest.raises(ConfigError, match="does not fit the PaliGemma of its config"):
        load_policy(ckpt)


def test_weight_names_and_the_variant_config_follow_lerobot():
    t = torch.zeros(1)
    mapped = map_lerobot_weights({
        "model.paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight": t,
        "paligemma_with_expert.paligemma.language_model.model.norm.weight": t,  # transformers 4 names
        "paligemma_with_expert.paligemma.vision_tower.vision_model.post_layernorm.weight": t,
        "paligemma_with_expert.paligemma.multi_modal_projector.linear.weight": t,
        "paligemma_with_expert.paligemma.language_model.lm_head.weight": t})
    assert sorted(mapped) == ["lm_head.weight", "model.language_model.embed_tokens.weight",
                              "model.language_model.layers.0.mlp.up_proj.weight", "model.language_model.norm.weight",
                              "model.multi_modal_projector.linear.weight",
                              "model.vision_tower.vision_model.post_layernorm.weight"]
    with pytest.raises(ConfigError, match="outside LeRobot's"):
        map_lerobot_weights({"model.action_out_proj.weight": t})
    cfg = paligemma_config_for_variant("gemma_2b")
    text = cfg.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.num_attention_heads,
            text.num_key_value_heads, text.head_dim, text.vocab_size) == (2048, 18, 16_384, 8, 1, 256, 257152)
    assert (cfg.vision_config.intermediate_size, cfg.vision_config.projection_dim) == (4304, 2048)
    assert paligemma_config_for_variant("gemma_300m").text_config.hidden_size == 1024


def test_the_language_model_pass_is_the_gemma_decoder_and_the_cache_changes_nothing(policy):
    embeds, pad, att = policy._prefix([_obs().image], [policy.prompt("pick up the red cube", [0.3, -1.2])])
    position = torch.cumsum(pad, dim=1) - 1
    lm = policy.paligemma.model.language_model
    with torch.no_grad():
        ours = policy._language_model(embeds, att, position, None)
        # transformers' Gemma forward, which LeRobot's PiGemmaModel (no AdaRMS) computes, given the same 4-D mask
        mask = torch.where(att[:, None], 0.0, -2.3819763e38)
        theirs = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position).last_hidden_state
    torch.testing.assert_close(ours, theirs)
    assert not pad[0, 8:8 + 40].all()  # the right padding of the prompt is masked out (cameras: 4 + 4 tokens)
    # KV-cache decoding gives the ids that recomputing the whole growing sequence gives (LeRobot's
    # sample_actions_fast): greedy, 6 steps
    policy.max_decoding_steps = 6
    cached = policy.generate_tokens([_obs().image], [policy.prompt("pick up the red cube", [0.3, -1.2])])[0]
    embed, ids = lm.get_input_embeddings(), []
    with torch.no_grad():
        for _ in range(6):
            hidden = policy._language_model(embeds, att, torch.cumsum(pad, dim=1) - 1, None)
            nxt = policy.paligemma.lm_head(hidden[:, -1]).argmax(dim=-1)
            ids.append(int(nxt))
            embeds = torch.cat([embeds, embed(nxt[:, None])], dim=1)
            pad = torch.cat([pad, torch.ones(1, 1, dtype=torch.bool)], dim=1)
            grown = torch.zeros(1, pad.shape[1], pad.shape[1], dtype=torch.bool)
            grown[:, :-1, :-1] = att
            grown[:, -1, :] = pad
            att = grown
    stop = ids.index(policy._end_id) + 1 if policy._end_id in ids else 6
    assert cached[:stop].tolist() == ids[:stop]


def test_a_bfloat16_checkpoint_keeps_lerobots_float32_parts(workspace):
    ckpt = _checkpoint(workspace)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    policy = load_policy(ckpt)
    dtypes = {name: p.dtype for name, p in policy.paligemma.named_parameters()}
    assert dtypes["model.language_model.layers.0.self_attn.q_proj.weight"] == torch.bfloat16
    assert dtypes["model.language_model.layers.0.input_layernorm.weight"] == torch.float32
    assert dtypes["model.language_model.norm.weight"] == torch.float32
    assert all(d == torch.float32 for n, d in dtypes.items() if "vision_tower" in n or "multi_modal" in n)
    chunk = policy.predict_chunk(_obs())
    assert chunk.shape == (H, D) and np.all(np.isfinite(chunk))


def test_tokenizers_saved_by_the_processor_pipeline_are_found(workspace):
    # newer LeRobot releases save the tokenizers next to the weights and name them in the pipeline
    import shutil

    ckpt = _checkpoint(workspace, text_dir=None, fast_dir=None)
    shutil.copytree(workspace / "paligemma_tokenizer", ckpt / "tokenizer")
    shutil.copytree(workspace / "fast", ckpt / "action_tokenizer")
    pre = json.loads((ckpt / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        if step["registry_name"] == "tokenizer_processor":
            step["config"]["tokenizer_name"] = "tokenizer"
        if step["registry_name"] == "action_tokenizer_processor":
            step["config"]["action_tokenizer_name"] = "action_tokenizer"
    (ckpt / "policy_preprocessor.json").write_text(json.dumps(pre))
    found = detect_pi0fast_checkpoint(ckpt)
    assert found.runnable, found.describe()
    assert found.tokenizers == {"action_tokenizer": ckpt / "action_tokenizer", "text_tokenizer": ckpt / "tokenizer"}
    assert load_policy(ckpt).predict_chunk(_obs()).shape == (H, D)
