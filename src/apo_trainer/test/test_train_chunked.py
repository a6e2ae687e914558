"""Training the chunked VLA (FAST action chunks) with every objective, from real HDF5 datasets."""

import json

import numpy as np
import pytest
import torch

from apo_core.dataset import MODE_HOLD, append_episode
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_core.policy.chunked_vla import ChunkedVLAPolicy
from apo_trainer.config import BC_PRESET, load_train_config
from apo_trainer.data import (
    AUTONOMOUS,
    EXPERT,
    HUMAN,
    UNDESIRABLE,
    StepDataset,
    TrainingDataError,
    check_policy_compatible,
    chunk_kinds,
    chunk_steps,
    collate_steps,
)
from apo_trainer.pairs import rejected_chunks
from apo_trainer.testing import (
    TINY_CHUNKED_SECTION,
    synthetic_episode,
    tiny_chunked_policy,
    tiny_policy,
    tiny_train_config,
    tiny_training_data,
)
from apo_trainer.train import Trainer, TrainingError, main, main_bc, train

H = TINY_CHUNKED_SECTION["chunk_horizon"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tiny_training_data(tmp_path_factory.mktemp("chunked"), n_expert=4, n_interactive=3)
    data.start_chunked = tiny_chunked_policy(data.stats, [data.expert, data.inter]).save(data.root / "start_chunked")
    return data


# --- chunks from episodes ------------------------------------------------------------------------
def test_chunk_steps_skip_hold_and_repeat_the_last_step():
    keep = np.array([1, 1, 0, 0, 1, 1, 1], dtype=bool)  # steps 2, 3 in HOLD
    steps = chunk_steps(keep, 4)
    assert steps[0].tolist() == [0, 1, 4, 5]
    assert steps[1].tolist() == [1, 4, 5, 6]
    assert steps[5].tolist() == [5, 6, 6, 6]
    assert steps[6].tolist() == [6, 6, 6, 6]


def test_a_chunk_is_as_good_as_its_worst_step():
    kinds = np.array([AUTONOMOUS, AUTONOMOUS, UNDESIRABLE, UNDESIRABLE, HUMAN, HUMAN, AUTONOMOUS])
    got = chunk_kinds(kinds, chunk_steps(np.ones(7, bool), 3))
    # steps 0, 1 cover undesirable step 2 -> undesirable; 4, 5, 6 cover none -> their own kind
    assert got.tolist() == [UNDESIRABLE, UNDESIRABLE, UNDESIRABLE, UNDESIRABLE, HUMAN, HUMAN, AUTONOMOUS]
    expert = np.full(5, EXPERT)
    assert chunk_kinds(expert, chunk_steps(np.ones(5, bool), 3)).tolist() == [EXPERT] * 5


def test_step_dataset_reads_chunks_of_consecutive_steps(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "d.hdf5"
    modes = np.zeros(10, np.uint8)
    modes[3] = MODE_HOLD
    ep = synthetic_episode("e0", 10, rng, source="expert", modes=modes)
    append_episode(path, ep)
    per_step = StepDataset(path)
    chunked = StepDataset(path, horizon=H)
    assert len(chunked) == len(per_step) == 9 and chunked.summary.as_dict()["horizon"] == H
    assert "horizon" not in per_step.summary.as_dict()
    item = chunked[2]  # step 2: then 4, 5, 6 (step 3 was HOLD)
    np.testing.assert_array_equal(item["action"], ep.actions[[2, 4, 5, 6]])
    np.testing.assert_array_equal(chunked[8]["action"], ep.actions[[9, 9, 9, 9]])  # step 9: the last step
    np.testing.assert_array_equal(item["image"], per_step[2]["image"])
    batch = collate_steps([chunked[i] for i in range(3)])
    assert batch["actions"].shape == (3, H, 7) and batch["policy_actions"].shape == (3, 7)
    np.testing.assert_array_equal(chunked.all_chunks()[2], ep.actions[[2, 4, 5, 6]])
    np.testing.assert_array_equal(chunked.all_actions(), per_step.all_actions())
    with pytest.raises(TrainingDataError, match="horizon=H"):
        per_step.all_chunks()
    with pytest.raises(TrainingDataError, match="positive integer"):
        StepDataset(path, horizon=0)


def test_chunk_labels_in_interactive_data(data):
    per_step = StepDataset(data.inter)
    chunked = StepDataset(data.inter, horizon=H)
    # Each of the 3 episodes has a takeover at step 12; with K = 10 steps 2..11 are undesirable, and the
    # chunks of steps 0 and 1 reach into them: 2 autonomous chunks per episode become undesirable.
    a, b = per_step.summary.kinds, chunked.summary.kinds
    assert b["undesirable"] - a["undesirable"] == a["autonomous"] - b["autonomous"] == 3 * 2
    assert b["human"] == a["human"]


def test_policy_and_data_must_agree_on_chunks(data):
    chunked = load_policy(data.start_chunked)
    with pytest.raises(TrainingDataError, match="chunks of 4 actions"):
        check_policy_compatible(StepDataset(data.inter), chunked)
    with pytest.raises(TrainingDataError, match="one action per step"):
        check_policy_compatible(StepDataset(data.inter, horizon=H), tiny_policy(data.stats))
    check_policy_compatible(StepDataset(data.inter, horizon=H), chunked)


# --- DPO negatives ----------------------------------------------------------------------------------
def test_rejected_chunks_are_the_target_moved_as_a_whole():
    stats = ActionStats.identity(3)
    t = np.linspace(-0.5, 0.5, 4)
    chunks = np.stack([np.stack([t, -t, np.full(4, 0.95)], axis=1)] * 2)
    proposals = np.array([[-0.5 + 0.3, 0.5, 0.95], [np.nan] * 3])
    rej, from_proposal = rejected_chunks(chunks, proposals, [0, 1], stats, perturbation=0.25)
    assert from_proposal.tolist() == [True, False]
    np.testing.assert_allclose(rej[0] - chunks[0], np.tile([0.3, 0.0, 0.0], (4, 1)), atol=1e-12)
    offset = rej[1] - chunks[1]
    np.testing.assert_allclose(np.abs(offset), 0.25, atol=1e-12)  # every element moves by delta ...
    np.testing.assert_allclose(offset, np.tile(offset[0], (4, 1)), atol=1e-12)  # ... the same way along the chunk (smooth as the target)
    assert offset[0, 2] == pytest.approx(-0.25)  # 0.95 + 0.25 would leave [-1, 1]: flipped


# --- training ---------------------------------------------------------------------------------------
def test_bc_from_scratch_builds_a_chunked_vla_and_learns(data, tmp_path):
    res = train(tiny_train_config(tmp_path / "bc0", data.expert, loss="bc", max_steps=60, batch_size=16,
                                  policy=TINY_CHUNKED_SECTION, train={"log_every": 20, "tensorboard": False}),
                preset=BC_PRESET)
    pol = load_policy(res.policy_dir)
    assert isinstance(pol, ChunkedVLAPolicy) and pol.chunk_horizon == H
    assert json.loads((res.policy_dir / "action_stats.json").read_text()) == data.stats.to_dict()
    start = tiny_chunked_policy(data.stats, [data.expert])  # the run's initial policy: same seed, sizes, FAST fit
    assert start.fast_tokenizer.bpe.to_str() == pol.fast_tokenizer.bpe.to_str()
    (l1_before, nll_before), (l1_after, nll_after) = _dataset_fit(start, data.expert), _dataset_fit(pol, data.expert)
    # Measured: L1 0.71 -> 0.59, NLL per token 6.07 -> 4.00 after 60 steps.
    assert l1_after < 0.9 * l1_before and nll_after < 0.8 * nll_before, (l1_before, l1_after, nll_before, nll_after)
    summary = json.loads(res.metrics_path.read_text())
    assert summary["dataset"]["horizon"] == H


def _dataset_fit(policy, path) -> tuple[float, float]:
    """(mean teacher-forced chunk L1, mean NLL per token) over every chunk of a dataset."""
    ds = StepDataset(path, horizon=H)
    batch = collate_steps([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        m = policy.forward_batch(policy.encode_batch(batch["images"], batch["instructions"], None, batch["actions"]))
    return float(m.l1.mean()), float((-m.logps / m.n_tokens).mean())


def _one_step(data, tmp_path, kinds_wanted, loss="apo"):
    cfg = load_train_config(tiny_train_config(tmp_path, data.inter, policy_path=data.start_chunked, loss=loss,
                                              optim={"lr": 1e-3, "warmup_ratio": 0.0},
                                              train={"tensorboard": False}))
    tr = Trainer(cfg)
    try:
        tr.setup()
        ds = tr.dataset
        rows = [int(np.flatnonzero(ds.kinds == k)[0]) for k in kinds_wanted]
        batch = collate_steps([ds[i] for i in rows])
        assert batch["actions"].shape == (len(rows), H, 7)
        with torch.no_grad():
            before = tr._forward(batch, batch["actions"], tr.model).logps.double()
        ref = tr.ref["chosen"][batch["index"]]
        assert torch.allclose(before, ref, atol=1e-4)  # the LoRA adapter starts at zero
        metrics = tr.train_step([batch])
        with torch.no_grad():
            after = tr._forward(batch, batch["actions"], tr.model).logps.double()
    finally:
        tr.close()
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["action_l1"] <= 2
    return before, after, ref


def test_one_apo_step_raises_desirable_and_lowers_undesirable_chunks(data, tmp_path):
    before, after, _ = _one_step(data, tmp_path / "d", [AUTONOMOUS])
    assert after[0] > before[0]
    before, after, _ = _one_step(data, tmp_path / "u", [UNDESIRABLE])
    assert after[0] < before[0]


@pytest.mark.parametrize("loss,extra", [
    ("apo", []),
    ("kto", []),
    ("dpo", []),
    ("dagger", ["--set", "data.kinds=[expert,human]"]),
    ("apo", ["--set", "loss.l1_mode=free_running", "--set", "loss.sft_weight=0.5"]),
], ids=["apo", "kto", "dpo", "dagger", "apo-free-running-l1-sft"])
def test_apo_train_cli_trains_the_chunked_vla_with_every_loss(data, tmp_path, capsys, loss, extra):
    out = tmp_path / "run"
    argv = ["--policy", str(data.start_chunked), "--dataset", str(data.expert), "--dataset", str(data.inter),
            "--output", str(out), "--loss", "bc" if loss == "dagger" else loss, "--max-steps", "3",
            "--set", "train.batch_size=8", "--set", "train.progress_bar=false", "--set", "train.tensorboard=false",
            "--set", "train.torch_threads=1", "--set", "train.log_every=1", *extra]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 3 and np.isfinite(printed["final"]["loss"])
    final = printed["final"]
    if loss in ("apo", "kto"):
        assert {"z0", "lambda_D", "lambda_U"} <= set(final)
    if "loss.l1_mode=free_running" in extra:
        assert 0 <= final["action_l1_free_running"] <= 2 and final["sft_nll"] > 0
    if loss == "dpo":
        assert {"reward_chosen", "reward_rejected"} <= set(final)
    trained = load_policy(out / "policy")
    start = load_policy(data.start_chunked)
    assert isinstance(trained, ChunkedVLAPolicy)
    changed = any(not torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(),
                                                        start.model.state_dict().values(), strict=True))
    assert changed, "training must change the weights"
    image = np.zeros((32, 32, 3), np.uint8)
    from apo_core.policy import Observation

    actions = [trained.predict(Observation(image, "push the square to the goal")) for _ in range(H + 1)]
    assert all(a.shape == (7,) and np.all(np.isfinite(a)) for a in actions)


def test_apo_train_bc_cli_starts_a_chunked_vla_from_the_config(data, tmp_path, capsys):
    out = tmp_path / "bc0"
    argv = ["--dataset", str(data.expert), "--output", str(out), "--max-steps", "2",
            "--set", "policy.architecture=chunked_vla", "--set", "policy.chunk_horizon=3",
            "--set", "policy.fast_vocab_size=100", "--set", "policy.image_size=32",
            "--set", "policy.text_vocab_size=300", "--set", "train.batch_size=4",
            "--set", "train.progress_bar=false", "--set", "train.tensorboard=false"]
    for key, value in TINY_CHUNKED_SECTION["text"].items():
        argv += ["--set", f"policy.text.{key}={value}"]
    for key, value in TINY_CHUNKED_SECTION["vision"].items():
        argv += ["--set", f"policy.vision.{key}={json.dumps(value) if isinstance(value, list) else value}"]
    assert main_bc(argv) == 0
    pol = load_policy(out / "policy")
    assert isinstance(pol, ChunkedVLAPolicy) and pol.chunk_horizon == 3 and pol.fast_tokenizer.vocab_size <= 100
    capsys.readouterr()
    assert main_bc(["--dataset", str(data.expert), "--output", str(tmp_path / "bad"),
                    "--set", "policy.architecture=fast_vla"]) == 2
    assert "architecture" in capsys.readouterr().err


def test_reference_policy_must_tokenise_chunks_the_same_way(data, tmp_path):
    cfg = tiny_train_config(tmp_path / "ref", data.inter, policy_path=data.start_chunked, loss="apo",
                            reference={"path": str(data.start)}, train={"tensorboard": False})
    with pytest.raises(TrainingError, match="discretises actions differently"):
        train(cfg)


def test_apo_round_on_converted_recorder_bags(tmp_path, capsys):
    """Bags written by the recorder's own writer -> apo-convert's converter -> apo-train --loss apo."""
    synthetic = pytest.importorskip("apo_recorder.synthetic")
    from apo_trainer.convert import convert_bags

    root = tmp_path / "bags"
    for e in range(3):
        synthetic.write_recorded_episode(root, f"rec_{e}", [1] * 20 + [2] * 5 + [1] * 5, image_size=(32, 32))
    data = tmp_path / "data" / "round1.hdf5"
    report = convert_bags(root, data, progress=False, settle_seconds=0)
    assert [b.status for b in report.bags] == ["added"] * 3, report.summary()
    stats = ActionStats.from_actions(StepDataset(data).all_actions())
    stats.save(data.parent / "action_stats.json")
    start = tiny_chunked_policy(stats, [data], state_dim=9).save(tmp_path / "start")
    out = tmp_path / "apo1"
    assert main(["--policy", str(start), "--dataset", str(data), "--output", str(out), "--loss", "apo",
                 "--max-steps", "2", "--set", "train.batch_size=4", "--set", "train.progress_bar=false",
                 "--set", "train.tensorboard=false", "--set", "train.torch_threads=1"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["dataset"]["horizon"] == H and summary["dataset"]["state_dim"] == 9
    assert summary["dataset"]["kinds"]["undesirable"] > 0 and summary["dataset"]["kinds"]["human"] == 15
    assert isinstance(load_policy(out / "policy"), ChunkedVLAPolicy)


def test_retrain_gate_scores_chunked_policies_on_held_out_chunks(data, tmp_path):
    from apo_trainer.retrain.evaluate import compare_heldout_l1, heldout_samples

    samples = heldout_samples(data.inter, 10, horizon=H)
    assert np.stack(samples[3]).shape[1:] == (H, 7)
    base, same = compare_heldout_l1(data.start_chunked, data.start_chunked, data.inter, 10)
    assert base == same and 0 < base <= 2
    other = tiny_chunked_policy(data.stats, [data.expert, data.inter], seed=1).save(tmp_path / "other")
    base, cand = compare_heldout_l1(data.start_chunked, other, data.inter, 10)
    assert base != cand and 0 < cand <= 2
    with pytest.raises(ValueError, match="chunks of 4 with one predicting chunks of None"):
        compare_heldout_l1(data.start_chunked, data.start, data.inter, 10)
