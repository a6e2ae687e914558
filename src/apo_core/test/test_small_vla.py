"""The small VLA: predict, batched log-probs / L1, save/load, LoRA, bad input."""

import numpy as np
import pytest
import torch

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.errors import MissingPathError
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_core.policy.base import IGNORE_INDEX, Observation, action_token_metrics
from apo_core.policy.lora import LoraSettings, merge_lora, trainable_parameter_count, wrap_with_lora
from apo_core.policy.prompt import build_prompt
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_core.policy.text_tokenizer import build_text_tokenizer

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


def _stats():
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.5, 0.5, size=(200, 7))
    a[:, -1] = np.sign(rng.normal(size=200))
    return ActionStats.from_actions(a)


@pytest.fixture(scope="module")
def policy():
    return SmallVLAPolicy.create(_stats(), state_dim=9, seed=1, **TINY)


def _batch(b=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(b, 40, 40, 3), dtype=np.uint8)
    states = rng.normal(size=(b, 9))
    actions = rng.uniform(-0.4, 0.4, size=(b, 7))
    actions[:, -1] = 1.0
    return images, states, actions


def test_prompt_is_openvla_format():
    assert build_prompt("Lift the red cube.") == "In: What action should the robot take to lift the red cube?\nOut:"
    with pytest.raises(ValueError):
        build_prompt("  ")


def test_tokenizer_has_action_tokens_last():
    tok = build_text_tokenizer(320, 256)
    assert len(tok) == 576
    assert tok.convert_ids_to_tokens(575) == "<act_255>" and tok.convert_ids_to_tokens(320) == "<act_000>"
    ids = tok.encode(build_prompt("stack the cube"), add_special_tokens=False)
    assert max(ids) < 320 and tok.decode(ids) == build_prompt("stack the cube")


def test_predict_returns_raw_action_within_stats(policy):
    images, states, _ = _batch(1)
    a = policy.predict(Observation(images[0], "lift the red cube", states[0]))
    assert a.shape == (7,) and np.all(np.isfinite(a))
    s = policy.action_stats
    assert np.all(a[:6] >= s.q01[:6] - 1e-9) and np.all(a[:6] <= s.q99[:6] + 1e-9)
    # deterministic (greedy)
    assert np.array_equal(a, policy.predict(Observation(images[0], "lift the red cube", states[0])))


def test_batched_predict_equals_single(policy):
    images, states, _ = _batch(3)
    instr = ["lift the red cube", "stack the red cube on the green cube", "lift the red cube"]
    batch = policy.predict_batch(images, instr, states)
    singles = np.stack([policy.predict(Observation(images[i], instr[i], states[i])) for i in range(3)])
    assert np.allclose(batch, singles)


def test_logps_and_l1_match_manual_computation(policy):
    images, states, actions = _batch(3)
    instr = ["lift the red cube"] * 3
    enc = policy.encode_batch(images, instr, states, actions)
    m = policy.forward_batch(enc)
    assert m.logps.shape == (3,) and m.l1.shape == (3,) and m.token_accuracy.shape == (3,)
    assert m.logps.requires_grad and torch.all(m.logps < 0)
    # manual: full forward, gather each target token's log-prob at its position
    with torch.no_grad():
        out, labels = policy.model(**enc)
        logp = torch.log_softmax(out.logits.float(), -1)
        targets = policy.labels_from_actions(actions)
        tok = policy.action_tokenizer
        for i in range(3):
            pos = (labels[i] != IGNORE_INDEX).nonzero().squeeze(-1)
            assert labels[i, pos].tolist() == targets[i].tolist()
            manual = sum(logp[i, p - 1, labels[i, p]].item() for p in pos)
            assert manual == pytest.approx(m.logps[i].item(), rel=1e-5)
            greedy = [int(logp[i, p - 1, tok.first_action_token:].argmax()) + tok.first_action_token for p in pos]
            l1 = np.abs(tok.decode(np.array(greedy)) - tok.decode(targets[i])).mean()
            assert l1 == pytest.approx(m.l1[i].item(), abs=1e-6)


def test_action_token_metrics_perfect_logits():
    tok = ActionTokenizer(50, n_bins=20)
    labels = torch.full((1, 6), IGNORE_INDEX)
    target = torch.tensor([45, 40, 33])
    labels[0, 3:] = target
    logits = torch.full((1, 6, 50), -20.0)
    for j, t in enumerate(target):
        logits[0, 2 + j, t] = 20.0
    m = action_token_metrics(logits, labels, tok, 3)
    assert m.l1.item() == 0 and m.token_accuracy.item() == 1 and m.logps.item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="action labels"):
        action_token_metrics(logits, labels, tok, 4)


def test_save_load_roundtrip_is_exact(policy, tmp_path):
    policy.version = "v0003"
    policy.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "action_stats.json").is_file()
    loaded = load_policy(tmp_path / "m")
    assert loaded.version == "v0003"
    for (n1, p1), (n2, p2) in zip(policy.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    images, states, actions = _batch(2)
    a = policy.forward_batch(policy.encode_batch(images, ["lift"] * 2, states, actions)).logps
    b = loaded.forward_batch(loaded.encode_batch(images, ["lift"] * 2, states, actions)).logps
    assert torch.allclose(a, b)


def test_missing_or_incomplete_model_dir_names_path(tmp_path):
    with pytest.raises(MissingPathError, match=str(tmp_path / "none")):
        load_policy(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingPathError, match="apo_policy.json"):
        load_policy(tmp_path / "empty")


def test_lora_wrap_targets_all_linear_but_head_and_trains(tmp_path):
    p = SmallVLAPolicy.create(_stats(), state_dim=9, seed=2, **TINY)
    peft_model = wrap_with_lora(p, LoraSettings(r=4, alpha=8))
    names = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert any("q_proj" in n for n in names) and any("projector" in n for n in names)
    assert any("state_proj" in n for n in names) and not any("lm_head" in n for n in names)
    trainable, total = trainable_parameter_count(peft_model)
    assert 0 < trainable < total
    cfg = peft_model.peft_config["default"]
    assert cfg.r == 4 and cfg.lora_alpha == 8
    images, states, actions = _batch(4)
    enc = p.encode_batch(images, ["lift the red cube"] * 4, states, actions)
    before = p.forward_batch(enc).logps.detach()
    opt = torch.optim.Adam([q for q in peft_model.parameters() if q.requires_grad], lr=1e-2)
    for _ in range(5):
        loss = -p.forward_batch(enc).logps.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = p.forward_batch(enc).logps.detach()
    assert after.mean() > before.mean()
    # merged save -> a plain model that reproduces the adapted log-probs
    merge_lora(p)
    p.save(tmp_path / "merged")
    again = load_policy(tmp_path / "merged")
    assert torch.allclose(again.forward_batch(again.encode_batch(images, ["lift the red cube"] * 4, states, actions)).logps,
                          after, atol=1e-4)


def test_state_conditioned_policy_requires_state(policy):
    images, _, _ = _batch(1)
    with pytest.raises(ValueError, match="state"):
        policy.predict(Observation(images[0], "lift", None))
    with pytest.raises(ValueError, match="9"):
        policy.predict(Observation(images[0], "lift", np.zeros(4)))


def test_bad_images_and_nan_actions_rejected(policy):
    images, states, actions = _batch(2)
    with pytest.raises(ValueError, match="uint8"):
        policy.encode_batch(images.astype(np.float32), ["lift"] * 2, states)
    actions[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.encode_batch(images, ["lift"] * 2, states, actions)
