"""loss.undesirable_tokens=disagreeing: each undesirable step carries the correction that followed it, and
its log-ratio sums only the tokens of the dimensions that disagree with that correction, in the policy
and in the cached reference alike."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from apo_core.errors import ConfigError
from apo_core.normalization import ActionStats
from apo_trainer.config import load_train_config
from apo_trainer.data import UNDESIRABLE, StepDataset, collate_steps
from apo_trainer.objectives import PreferenceObjective, disagreeing_dims
from apo_trainer.testing import tiny_policy, tiny_train_config, tiny_training_data, write_interactive_dataset
from apo_trainer.train import Trainer

DISAGREEING = {"name": "apo", "undesirable_tokens": "disagreeing", "agree_bins": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_training_data(tmp_path_factory.mktemp("tokens"), n_expert=3, n_interactive=3)


def test_each_undesirable_step_carries_the_first_human_action_after_it(tmp_path):
    path = write_interactive_dataset(tmp_path / "inter.hdf5", n_episodes=2, length=30,
                                     takeovers=((8, 12), (22, 26)), image_size=16)
    ds = StepDataset(path, k=4)
    seen = 0
    for i in range(len(ds)):
        item = ds[i]
        episode, t = ds.episode_of(i)
        if item["kind"] == UNDESIRABLE:
            takeover = 8 if t < 8 else 22  # steps 4..7 precede the first takeover, 18..21 the second
            same_episode = [j for j in range(len(ds)) if ds.episode_of(j) == (episode, takeover)][0]
            np.testing.assert_array_equal(item["correction"], ds[same_episode]["action"])
            seen += 1
        else:
            assert np.isnan(item["correction"]).all()
    assert seen == 2 * 2 * 4
    assert collate_steps([ds[0], ds[1]])["corrections"].shape == (2, 7)


def test_per_dimension_log_probs_sum_to_the_action_log_prob():
    rng = np.random.default_rng(0)
    policy = tiny_policy(ActionStats.from_actions(rng.uniform(-1, 1, (50, 7))))
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    m = policy.forward_batch(policy.encode_batch(images, ["lift the cube"] * 3, None, rng.uniform(-1, 1, (3, 7))))
    assert m.token_logps.shape == (3, 7) and bool(torch.all(m.token_logps <= 0))
    torch.testing.assert_close(m.token_logps.sum(dim=1), m.logps)


def test_disagreeing_dimensions_are_those_more_than_agree_bins_away():
    rng = np.random.default_rng(1)
    stats = ActionStats.from_actions(rng.uniform(-1, 1, (50, 7)))
    policy = tiny_policy(stats)
    centres = policy.action_tokenizer.bin_centers
    bins = np.full((3, 7), 100)
    correction_bins = bins.copy()
    correction_bins[0, 0] = 160  # far in dimension 0 only
    correction_bins[1, 6], correction_bins[1, 5] = 101, 103  # one bin away, three bins away
    actions, corrections = stats.unnormalise(centres[bins]), stats.unnormalise(centres[correction_bins])
    corrections[2] = np.nan  # no correction: every token counts
    mask = disagreeing_dims(policy, actions, corrections, agree_bins=2)
    assert mask[0].tolist() == [True] + [False] * 6
    assert mask[1].tolist() == [False] * 5 + [True, False]
    assert mask[2].all()
    assert disagreeing_dims(policy, actions, corrections, agree_bins=0)[1].tolist() == [False] * 5 + [True, True]
    with pytest.raises(ConfigError, match="action chunks"):
        disagreeing_dims(policy, np.zeros((2, 4, 7)), np.zeros((2, 4, 7)), agree_bins=2)


def test_the_cache_and_the_training_step_sum_the_same_disagreeing_tokens(data, tmp_path):
    cfg = load_train_config(tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start, loss=DISAGREEING,
                                              optim={"lr": 1e-3, "warmup_ratio": 0.0}))
    tr = Trainer(cfg)
    try:
        tr.setup()
        ds = tr.dataset
        rows = [int(i) for i in np.flatnonzero(ds.kinds == UNDESIRABLE)[:4]] + [int(np.flatnonzero(ds.kinds != UNDESIRABLE)[0])]
        batch = collate_steps([ds[i] for i in rows])
        mask = disagreeing_dims(tr.policy, batch["actions"], batch["corrections"], 2)
        assert mask[-1].all() and not mask[:-1].all()  # the desirable step counts every token; some agree
        with torch.no_grad():
            ref = tr._reference_metrics(batch, batch["actions"]).token_logps.double()
            mine = tr._forward(batch, batch["actions"], tr.model)
        expected = (ref * torch.as_tensor(mask)).sum(dim=1)
        torch.testing.assert_close(tr.ref["chosen"][batch["index"]], expected)
        # The adapter starts at zero: the masked log-ratio of every sample is 0 before the first step.
        logps = PreferenceObjective.summed_logps(mine, torch.as_tensor(mask))
        torch.testing.assert_close(logps, expected, atol=1e-4, rtol=0)
        metrics = tr.train_step([batch])
        assert 0 < metrics["pushed_token_share"] < 1 and np.isfinite(metrics["loss"])
    finally:
        tr.close()
    saved = load_file(str(tmp_path / "o" / "reference_logps.safetensors"))["chosen"]
    torch.testing.assert_close(saved[batch["index"]], expected)


def test_a_cache_of_the_other_mode_is_not_reused(data, tmp_path):
    every = load_train_config(tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start))
    some = load_train_config(tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start, loss=DISAGREEING))
    fields = [PreferenceObjective("apo", c).fingerprint_fields() for c in (every, some)]
    assert fields[0] == {"dpo": None}  # the default adds nothing: caches written before the option stay valid
    assert fields[1] == {"dpo": None, "undesirable_tokens": ["disagreeing", 2]}


@pytest.mark.parametrize("loss, error", [
    ({**DISAGREEING, "name": "bc"}, "is for apo and kto"),
    ({**DISAGREEING, "z0_source": "mismatched"}, "use z0_source=batch"),
    ({**DISAGREEING, "agree_bins": -1}, "agree_bins must be >= 0"),
    ({**DISAGREEING, "undesirable_tokens": "some"}, "undesirable_tokens"),
])
def test_bad_settings_are_refused(data, tmp_path, loss, error):
    with pytest.raises(ConfigError, match=error):
        load_train_config(tiny_train_config(tmp_path / "o", data.inter, policy_path=data.start, loss=loss))
