"""The HDF5 step dataset (labels, kinds, filtering, bad input) and the balanced sampler."""

import numpy as np
import pytest

from apo_core.dataset import MODE_ESTOP, MODE_HOLD, append_episode, read_episode
from apo_core.errors import MissingPathError
from apo_core.normalization import ActionStats
from apo_trainer.data import (
    AUTONOMOUS,
    EXPERT,
    HUMAN,
    UNDESIRABLE,
    StepDataset,
    TrainingDataError,
    check_policy_compatible,
    check_stats,
    collate_steps,
    dataset_action_stats,
)
from apo_trainer.sampler import BalancedBatchSampler, largest_remainder
from apo_trainer.testing import (
    synthetic_episode,
    tiny_policy,
    write_expert_dataset,
    write_interactive_dataset,
)


@pytest.fixture(scope="module")
def interactive(tmp_path_factory):
    return write_interactive_dataset(tmp_path_factory.mktemp("d") / "inter.hdf5", n_episodes=3, length=30,
                                     takeovers=((12, 20),), image_size=16)


def test_kinds_follow_the_k_window(interactive):
    ds = StepDataset(interactive, k=10)
    # per episode: steps 2..11 undesirable, 12..19 human, 0..1 and 20..29 autonomous
    assert ds.summary.kinds == {"expert": 0, "autonomous": 36, "human": 24, "undesirable": 30}
    ds3 = StepDataset(interactive, k=3)
    assert ds3.summary.kinds["undesirable"] == 9 and ds3.summary.kinds["autonomous"] == 57
    assert ds.desirable_mask().sum() == 60


def test_items_match_the_stored_episode(interactive):
    ds = StepDataset(interactive, k=10)
    ep = read_episode(interactive, "demo_1")
    i = next(j for j in range(len(ds)) if ds.episode_of(j) == (ep.episode_id, 13))
    item = ds[i]
    np.testing.assert_array_equal(item["image"], ep.images[13])
    np.testing.assert_array_equal(item["action"], ep.actions[13])
    assert item["kind"] == HUMAN and item["desirable"] and item["instruction"] == ep.instruction
    batch = collate_steps([ds[0], ds[1]])
    assert batch["images"].shape == (2, 16, 16, 3) and batch["images"].dtype == np.uint8
    assert batch["actions"].shape == (2, 7)


def test_expert_steps_and_hold_estop_filtering(tmp_path):
    path = tmp_path / "mix.hdf5"
    rng = np.random.default_rng(0)
    append_episode(path, synthetic_episode("e0", 10, rng, image_size=16, source="expert",
                                           live_labels=np.full(10, 2)))
    modes = np.zeros(12, np.uint8)
    modes[3:5] = MODE_HOLD
    modes[7] = MODE_ESTOP
    append_episode(path, synthetic_episode("i0", 12, rng, image_size=16, source="interactive", modes=modes))
    ds = StepDataset(path)
    assert ds.summary.kinds == {"expert": 10, "autonomous": 9, "human": 0, "undesirable": 0}
    assert ds.summary.dropped_hold_estop == 3
    assert set(ds.kinds.tolist()) == {EXPERT, AUTONOMOUS}
    only = StepDataset(path, kinds=["expert", "human"])
    assert len(only) == 10 and only.summary.dropped_by_kind == 9


def test_empty_and_missing_inputs_have_clear_errors(tmp_path):
    with pytest.raises(TrainingDataError, match="data.paths is empty"):
        StepDataset([])
    with pytest.raises(MissingPathError, match="nope.hdf5"):
        StepDataset(tmp_path / "nope.hdf5")
    held = tmp_path / "held.hdf5"
    rng = np.random.default_rng(0)
    append_episode(held, synthetic_episode("h", 5, rng, image_size=16, modes=np.full(5, MODE_HOLD)))
    with pytest.raises(TrainingDataError, match="5 dropped as HOLD/E-STOP"):
        StepDataset(held)
    with pytest.raises(TrainingDataError, match="unknown step kind 'humans'"):
        StepDataset(held, kinds=["humans"])


def test_mismatched_action_dimensions(tmp_path):
    a = write_expert_dataset(tmp_path / "a" / "a.hdf5", n_episodes=1, length=5, image_size=16)
    b = write_expert_dataset(tmp_path / "b" / "b.hdf5", n_episodes=1, length=5, image_size=16, action_dim=6)
    with pytest.raises(TrainingDataError, match="mismatched action dimensions.*6-D actions.*7-D actions"):
        StepDataset([a, b])
    ds = StepDataset(b)
    with pytest.raises(TrainingDataError, match="dataset .* has 6-D actions, the policy expects 7-D"):
        check_policy_compatible(ds, tiny_policy(image_size=16))


def test_zero_range_statistics_are_refused(tmp_path):
    stats = ActionStats(q01=[0.0, -1.0], q99=[0.0, 1.0], mask=[True, True])
    with pytest.raises(TrainingDataError, match=r"zero range .* dimension\(s\) \[0\]"):
        check_stats(stats, "x.json")
    path = write_expert_dataset(tmp_path / "s.hdf5", n_episodes=1, length=5, image_size=16)
    stats.save(tmp_path / "action_stats.json")
    with pytest.raises(TrainingDataError, match="action_stats.json have zero range"):
        dataset_action_stats([path])


def _groups(sizes, offset=0):
    out, start = {}, offset
    for g, n in sizes.items():
        out[g] = np.arange(start, start + n)
        start += n
    return out


def test_largest_remainder():
    assert largest_remainder({"a": 0.5, "b": 0.25, "c": 0.25}, 8) == {"a": 4, "b": 2, "c": 2}
    assert sum(largest_remainder({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10).values()) == 10


def test_balanced_proportions_and_determinism():
    groups = _groups({"desirable": 500, "human": 200, "undesirable": 300})
    s = BalancedBatchSampler(groups, batch_size=8, seed=3)
    s.set_epoch(0)
    batches = list(s)
    assert len(batches) == 1000 // 8
    flat = np.concatenate(batches)
    share_h = np.isin(flat, groups["human"]).mean()
    share_u = np.isin(flat, groups["undesirable"]).mean()
    assert share_h == pytest.approx(0.25, abs=0.01) and share_u == pytest.approx(0.25, abs=0.01)
    assert all(len(b) == 8 for b in batches)
    s2 = BalancedBatchSampler(groups, batch_size=8, seed=3)
    s2.set_epoch(0)
    assert list(s2) == batches  # deterministic per seed + epoch
    s2.set_epoch(1)
    assert list(s2) != batches
    s2.set_epoch(0, start_batch=5)
    assert list(s2) == batches[5:]  # resume skips consumed batches


def test_two_ranks_disjoint_and_union_equals_single_process():
    groups = _groups({"desirable": 400, "human": 150, "undesirable": 250})
    ranks = [BalancedBatchSampler(groups, batch_size=4, num_replicas=2, rank=r, seed=7) for r in range(2)]
    single = BalancedBatchSampler(groups, batch_size=8, seed=7)
    for s in (*ranks, single):
        s.set_epoch(2)
    b0, b1, bs = list(ranks[0]), list(ranks[1]), list(single)
    assert len(b0) == len(b1) == len(bs) == 800 // 8
    for x, y, z in zip(b0, b1, bs, strict=True):
        assert sorted(x + y) == sorted(z)
        # each rank keeps the proportions: 2 desirable, 1 human, 1 undesirable
        assert np.isin(x, groups["human"]).sum() == 1 and np.isin(y, groups["undesirable"]).sum() == 1
    # human (150 items) needs 1*2*100 = 200 draws: oversampled; the others are not and never repeat
    d0 = np.concatenate(b0)
    d1 = np.concatenate(b1)
    for g in ("desirable", "undesirable"):
        x, y = d0[np.isin(d0, groups[g])], d1[np.isin(d1, groups[g])]
        assert len(np.intersect1d(x, y)) == 0 and len(set(x.tolist())) == len(x)
    assert ranks[0].oversampling()["human"] == pytest.approx(200 / 150)


def test_no_duplicates_across_ranks_in_an_epoch_when_groups_suffice():
    groups = _groups({"desirable": 400, "human": 200, "undesirable": 200})
    ranks = [BalancedBatchSampler(groups, batch_size=8, num_replicas=2, rank=r, seed=1) for r in range(2)]
    for s in ranks:
        s.set_epoch(0)
    d0, d1 = np.concatenate(list(ranks[0])), np.concatenate(list(ranks[1]))
    assert len(np.intersect1d(d0, d1)) == 0
    assert len(set(d0.tolist())) == len(d0)


def test_missing_group_share_is_redistributed_and_reported(caplog):
    groups = _groups({"desirable": 100, "human": 0, "undesirable": 60})
    with caplog.at_level("WARNING"):
        s = BalancedBatchSampler(groups, batch_size=6, seed=0)
    assert s.shares["human"] == 0 and s.shares["desirable"] == pytest.approx(2 / 3)
    assert s.counts == {"desirable": 4, "undesirable": 2}
    assert any("no human corrections" in n for n in s.notes)
    assert "redistributed" in caplog.text
    with pytest.raises(TrainingDataError, match="every group with a positive share is empty"):
        BalancedBatchSampler(_groups({"desirable": 0, "human": 0, "undesirable": 0}), batch_size=4)
    with pytest.raises(TrainingDataError, match="unknown group"):
        BalancedBatchSampler(groups, {"good": 1.0}, batch_size=4)


def test_dataset_groups_feed_the_sampler(interactive):
    ds = StepDataset(interactive, k=10)
    groups = ds.group_indices()
    assert {g: len(v) for g, v in groups.items()} == {
        "desirable": 36, "expert": 0, "autonomous": 36, "human": 24, "undesirable": 30}
    s = BalancedBatchSampler(groups, batch_size=8)
    s.set_epoch(0)
    for batch in s:
        kinds = ds.kinds[batch]
        assert (kinds == UNDESIRABLE).sum() == 2 and (kinds == HUMAN).sum() == 2


def test_expert_and_autonomous_shares_weigh_the_policys_own_steps_apart(interactive, tmp_path):
    expert = write_expert_dataset(tmp_path / "expert.hdf5", n_episodes=3, length=20, image_size=16)
    ds = StepDataset([expert, interactive], k=10)
    groups = ds.group_indices()
    assert len(groups["desirable"]) == len(groups["expert"]) + len(groups["autonomous"]) == 60 + 36
    shares = {"expert": 0.375, "autonomous": 0.125, "human": 0.25, "undesirable": 0.25}
    s = BalancedBatchSampler(groups, shares, batch_size=8, seed=3)
    s.set_epoch(0)
    batches = list(s)
    assert batches
    for batch in batches:
        kinds = ds.kinds[batch]
        assert [(kinds == k).sum() for k in (EXPERT, AUTONOMOUS, HUMAN, UNDESIRABLE)] == [3, 1, 2, 2]


@pytest.mark.parametrize("shares, data_kinds, error", [
    ({"desirable": 0.5, "expert": 0.1, "human": 0.2, "undesirable": 0.2}, None, "both draw expert steps"),
    ({"expert": 0.5, "human": 0.25, "undesirable": 0.25}, None, "no group for the autonomous steps"),
    ({"desirable": 0.5, "human": 0.5}, ["expert", "human", "undesirable"], "no group for the undesirable"),
    ({"good": 0.5, "human": 0.5}, None, r"unknown group\(s\) \['good'\]"),
])
def test_shares_that_double_draw_or_drop_a_kind_are_refused(shares, data_kinds, error):
    from apo_core.errors import ConfigError
    from apo_trainer.config import load_train_config

    cfg = {"output_dir": "o", "policy": {"path": "p"}, "data": {"paths": ["d.h5"], "kinds": data_kinds},
           "sampler": {"shares": shares}}
    with pytest.raises(ConfigError, match=error):
        load_train_config(cfg)
    # Leaving the kind out of the data makes the same shares valid.
    cfg["data"]["kinds"] = ["expert", "human", "undesirable"]
    if error.startswith("no group for the autonomous"):
        assert load_train_config(cfg).sampler.shares == shares
