"""The chunked VLA: FAST-token chunks on the small VLA's trunk, executed one action per control step."""

import json

import numpy as np
import pytest
import torch

from apo_core.errors import ConfigError, MissingPathError
from apo_core.fast_tokenizer import FastActionTokenizer
from apo_core.normalization import ActionStats
from apo_core.policy import Observation, load_policy
from apo_core.policy.chunk_execution import ChunkExecutor
from apo_core.policy.chunked_vla import CHUNK_CONFIG_FILENAME, ChunkedVLAPolicy
from apo_core.policy.small_vla import SmallVLAModel

H, D = 4, 7
TINY = dict(image_size=32, text_vocab_size=300,
            vision={"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "max_position_embeddings": 128})
INSTR = ["lift the red cube", "stack the red cube on the green cube"]  # two prompt lengths


def _demo_actions(n=240, seed=0):
    """Smooth arm motion with a switching gripper, like scripted demonstrations."""
    t = np.linspace(0, 4, n)
    rng = np.random.default_rng(seed)
    arm = np.stack([0.5 * np.sin(1.3 * t + p) for p in rng.uniform(0, 3, size=D - 1)], axis=1)
    return np.concatenate([arm, np.sign(np.sin(2 * t))[:, None]], axis=1)


@pytest.fixture(scope="module")
def stats():
    return ActionStats.from_actions(_demo_actions())


@pytest.fixture(scope="module")
def fast(stats):
    acts = _demo_actions()
    chunks = np.stack([acts[s:s + H] for s in range(len(acts) - H)])
    return FastActionTokenizer.fit(stats.normalise(chunks), None, vocab_size=96)


def _policy(fast, stats, seed=0, **execution):
    return ChunkedVLAPolicy.create(fast, stats, seed=seed, **TINY, **execution)


def _images(b, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(b, 32, 32, 3), dtype=np.uint8)


def _target_chunks(b, seed=0):
    acts = _demo_actions(seed=seed)
    return np.stack([acts[10 * i:10 * i + H] for i in range(b)])


# --- execution strategy ---------------------------------------------------------------------------
def test_receding_horizon_plans_every_replan_every_steps_and_reset_replans():
    ex = ChunkExecutor(horizon=4, replan_every=2)
    chunks = [np.full((4, 2), 0.1 * k) + np.arange(4)[:, None] * 0.01 for k in range(3)]
    plans, actions = 0, []
    for _ in range(5):
        if ex.needs_plan(0):
            ex.add_plan(0, chunks[plans])
            plans += 1
        actions.append(ex.next_action(0)[0])
    # steps 0,1 from chunk 0; 2,3 from chunk 1; 4 from chunk 2 (always the newest, from its start)
    np.testing.assert_allclose(actions, [0.0, 0.01, 0.1, 0.11, 0.2])
    assert plans == 3
    assert not ex.needs_plan(0)
    ex.reset(0)
    assert ex.needs_plan(0)
    assert ChunkExecutor(horizon=8).replan_every == 4  # default H // 2


def test_temporal_ensembling_weights_fresher_plans_by_exp_decay():
    ex = ChunkExecutor(horizon=4, replan_every=1, ensemble_decay=0.5)
    old, new = np.full((4, 1), 0.8), np.full((4, 1), -0.4)
    ex.add_plan(0, old)
    assert ex.next_action(0)[0] == pytest.approx(0.8)
    ex.add_plan(0, new)  # old is now 1 step old, new 0
    w_old, w_new = np.exp(-0.5), 1.0
    assert ex.next_action(0)[0] == pytest.approx((w_old * 0.8 + w_new * -0.4) / (w_old + w_new))
    # decay 0: plain mean of every plan still covering the step
    ex = ChunkExecutor(horizon=2, replan_every=1, ensemble_decay=0.0)
    for value in (0.2, 0.6, 1.0):
        ex.add_plan(0, np.full((2, 1), value))
        got = ex.next_action(0)[0]
    assert got == pytest.approx(0.8)  # the 0.2 plan has run out; 0.6 and 1.0 remain


@pytest.mark.parametrize("kwargs", [{"replan_every": 0}, {"replan_every": 5}, {"replan_every": 1.5},
                                    {"ensemble_decay": -1.0}, {"ensemble_decay": float("nan")}])
def test_bad_execution_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="replan_every|ensemble_decay"):
        ChunkExecutor(horizon=4, **kwargs)


def test_executor_refuses_misuse():
    ex = ChunkExecutor(horizon=2, replan_every=2)
    with pytest.raises(RuntimeError, match="no plan"):
        ex.next_action(3)
    with pytest.raises(ValueError, match="chunk"):
        ex.add_plan(0, np.zeros((3, 1)))


# --- training quantities -------------------------------------------------------------------------
def test_logprob_is_the_sum_over_the_chunk_tokens_and_eos(fast, stats):
    pol = _policy(fast, stats)
    chunks = _target_chunks(3)
    batch = pol.encode_batch(_images(3), [INSTR[0], INSTR[1], INSTR[0]], None, chunks)
    m = pol.forward_batch(batch)
    ids = pol.labels_from_actions(chunks)
    assert m.n_tokens.tolist() == [len(x) + 1 for x in ids]
    # Independent check: score each sample's sequence alone, token by token.
    with torch.no_grad():
        for i in range(3):
            one = pol.encode_batch(_images(3)[i:i + 1], [[INSTR[0], INSTR[1], INSTR[0]][i]], None, chunks[i:i + 1])
            out, labels = pol.model(**one)
            logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
            lab = labels[0, 1:]
            pos = torch.nonzero(lab != -100).squeeze(1)
            want = float(logp[pos, lab[pos]].sum())
            assert float(m.logps[i]) == pytest.approx(want, rel=1e-4, abs=1e-3)
            assert int(lab[pos[-1]]) == pol.eos_id
    assert m.pred_actions.shape == (3, H, D)
    assert torch.all((m.l1 >= 0) & (m.l1 <= 2)) and torch.all(torch.isfinite(m.logps))


def test_overfitting_one_chunk_gives_zero_l1_and_the_chunk_back(fast, stats):
    """BC on one (observation, chunk): token accuracy reaches 1, the teacher-forced L1 0, and the greedy
    generation returns the target's tokens, executed step by step."""
    pol = _policy(fast, stats, seed=1, replan_every=H)
    chunk = _target_chunks(1, seed=2)
    image = _images(1, seed=5)
    batch = pol.encode_batch(image, INSTR[0], None, chunk)
    opt = torch.optim.Adam(pol.model.parameters(), lr=1e-2)
    for _ in range(150):
        m = pol.forward_batch(batch)
        loss = -(m.logps / m.n_tokens).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(m.token_accuracy[0]) == 1.0:
            break
    pol.model.eval()
    m = pol.forward_batch(batch)
    assert float(m.token_accuracy[0]) == 1.0 and float(m.l1[0]) == 0.0
    want = pol.quantised_targets(chunk)[0]
    np.testing.assert_array_equal(pol.predict_normalised_chunks(image, [INSTR[0]]), want[None])
    assert float(pol.free_running_l1(image, [INSTR[0]], chunk)[0]) == 0.0
    pol.reset()
    steps = np.stack([pol.predict(Observation(image[0], INSTR[0])) for _ in range(H)])
    np.testing.assert_allclose(steps, stats.unnormalise(want))
    assert np.abs(steps - chunk[0]).max() <= fast.quantisation_bound * np.max(stats.q99 - stats.q01) / 2 + 1e-9


def test_actions_must_be_chunks(fast, stats):
    pol = _policy(fast, stats)
    with pytest.raises(ValueError, match=r"chunks of shape \(B, 4, 7\)"):
        pol.encode_batch(_images(2), INSTR, None, np.zeros((2, D)))
    with pytest.raises(ValueError, match="NaN"):
        pol.labels_from_actions(np.full((1, H, D), np.nan))


# --- safety of generated actions -----------------------------------------------------------------
@pytest.mark.parametrize("budget", [1, None])
def test_wild_generations_decode_to_finite_in_range_actions(fast, stats, budget):
    """Huge random output weights make arbitrary token sequences (too long, too short, cut by the budget)."""
    pol = _policy(fast, stats, seed=3, max_action_tokens=budget, replan_every=1)
    with torch.no_grad():
        head = pol.model.get_output_embeddings().weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)) * 50)
    lo = np.where(stats.mask, stats.q01, -1.0)
    hi = np.where(stats.mask, stats.q99, 1.0)
    for i in range(12):
        a = pol.predict(Observation(_images(1, seed=i)[0], INSTR[i % 2]))
        assert a.shape == (D,) and np.all(np.isfinite(a))
        assert np.all(a >= lo - 1e-12) and np.all(a <= hi + 1e-12)


def test_malformed_token_sequences_decode_safely(fast, stats):
    pol = _policy(fast, stats)
    hold = pol.decode_tokens([])  # empty: the hold chunk (raw zeros)
    np.testing.assert_allclose(hold, np.zeros((H, D)), atol=1e-12)
    for bad in ([fast.vocab_size + 5], [-1, 3], list(range(min(fast.vocab_size, 200))) * 3):
        out = pol.decode_tokens(bad)
        assert out.shape == (H, D) and np.all(np.isfinite(out))
        assert np.all(out[:, stats.mask] >= stats.q01[stats.mask] - 1e-12)
        assert np.all(out[:, stats.mask] <= stats.q99[stats.mask] + 1e-12)


# --- several environments at once ---------------------------------------------------------------
def test_batched_slots_equal_each_environment_driven_alone(fast, stats):
    """Three environments in one batched call per step (slots 0..2; slot 1 restarts its episode midway)
    give bitwise the actions each environment gets from its own copy of the policy."""
    batched = _policy(fast, stats, seed=4, replan_every=2)
    alone = [_policy(fast, stats, seed=4, replan_every=2) for _ in range(3)]
    rng = np.random.default_rng(7)
    for step in range(6):
        images = rng.integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8)
        instr = [INSTR[0], INSTR[1], INSTR[0]]
        if step == 3:
            batched.reset(1)
            alone[1].reset()
        got = batched.predict_batch_exact(images, instr, slots=[0, 1, 2])
        want = np.stack([alone[i].predict(Observation(images[i], instr[i])) for i in range(3)])
        np.testing.assert_array_equal(got, want)


def test_batch_without_slots_is_refused(fast, stats):
    pol = _policy(fast, stats)
    with pytest.raises(ValueError, match="slots"):
        pol.predict_batch_exact(_images(2), INSTR[0])
    with pytest.raises(ValueError, match="distinct slots"):
        pol.predict_batch_exact(_images(2), INSTR[0], slots=[1, 1])


def test_reset_makes_the_next_step_plan_from_the_new_observation(fast, stats):
    pol = _policy(fast, stats, seed=5, replan_every=H)
    a, b = _images(2, seed=9)
    first = pol.predict(Observation(a, INSTR[0]))
    planned_b = pol.action_stats.unnormalise(pol.predict_normalised_chunks(b[None], [INSTR[0]])[0])
    # Without reset, step 2 continues a's chunk; after reset it is step 0 of a chunk planned from b.
    pol.reset()
    np.testing.assert_array_equal(pol.predict(Observation(b, INSTR[0])), planned_b[0])
    assert first.shape == (D,)


# --- persistence ---------------------------------------------------------------------------------
def test_save_and_load_policy_round_trip(fast, stats, tmp_path):
    pol = _policy(fast, stats, seed=6, replan_every=3, ensemble_decay=0.25)
    pol.version = "v-chunk"
    pol.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "apo_policy.json").read_text())
    assert meta["kind"] == "chunked_vla" and meta["horizon"] == H
    loaded = load_policy(tmp_path / "p")
    assert isinstance(loaded, ChunkedVLAPolicy) and loaded.version == "v-chunk"
    assert loaded.execution_config() == pol.execution_config()
    images = _images(3, seed=1)
    np.testing.assert_array_equal(loaded.predict_normalised_chunks(images, INSTR * 1 + [INSTR[0]]),
                                  pol.predict_normalised_chunks(images, INSTR * 1 + [INSTR[0]]))
    # Execution settings can be overridden at load time.
    other = load_policy(tmp_path / "p", replan_every=1, ensemble_decay=None)
    assert other.executor.replan_every == 1 and other.executor.ensemble_decay is None


def test_incomplete_or_bad_directories_give_clear_errors(fast, stats, tmp_path):
    pol = _policy(fast, stats)
    d = pol.save(tmp_path / "p")
    with pytest.raises(ConfigError, match="unknown chunked-policy setting"):
        load_policy(d, replan_evry=2)
    with pytest.raises(ConfigError, match=r"replan_every must be an integer in \[1, 4\]"):
        load_policy(d, replan_every=9)
    cfg = json.loads((d / CHUNK_CONFIG_FILENAME).read_text())
    (d / CHUNK_CONFIG_FILENAME).write_text(json.dumps({**cfg, "horizon": 6}))
    with pytest.raises(ConfigError, match="horizon 6"):
        load_policy(d)
    (d / CHUNK_CONFIG_FILENAME).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_policy(d)
    (d / CHUNK_CONFIG_FILENAME).write_text(json.dumps(cfg))
    (d / "fast_tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(MissingPathError, match="FAST tokenizer file not found"):
        load_policy(d)
    (d / CHUNK_CONFIG_FILENAME).unlink()
    with pytest.raises(MissingPathError, match="incomplete"):
        load_policy(d)


def test_reuses_the_small_vla_trunk(fast, stats):
    assert type(_policy(fast, stats).model) is SmallVLAModel


def test_fast_tokenizer_with_its_own_statistics_is_refused(stats):
    acts = _demo_actions()
    chunks = np.stack([acts[s:s + H] for s in range(len(acts) - H)])
    own = FastActionTokenizer.fit(chunks, stats, vocab_size=96)
    with pytest.raises(ValueError, match="normalised chunks"):
        ChunkedVLAPolicy.create(own, stats, **TINY)
