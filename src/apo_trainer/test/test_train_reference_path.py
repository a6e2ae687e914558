"""reference.path: the cached reference log-probs come from the named policy, not the starting one."""


import pytest
import torch

from apo_core.errors import ConfigError
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_trainer.config import load_train_config
from apo_trainer.data import collate_steps
from apo_trainer.testing import (
    tiny_policy,
    tiny_train_config,
    tiny_training_data,
)
from apo_trainer.train import Trainer, TrainingError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tiny_training_data(tmp_path_factory.mktemp("refpath"), n_expert=2, n_interactive=2)
    data.other = tiny_policy(data.stats, seed=1).save(data.root / "other")  # same action statistics, other weights
    return data


def _logps(policy_dir, batch) -> torch.Tensor:
    policy = load_policy(policy_dir)
    policy.model.eval()
    with torch.no_grad():
        enc = policy.encode_batch(batch["images"], batch["instructions"], None, batch["actions"])
        return policy.forward_batch(enc).logps.double()


def _cache(data, out, loss="apo", **reference):
    cfg = load_train_config(tiny_train_config(out, [data.expert, data.inter], policy_path=data.start, loss=loss,
                                              max_steps=1, reference={"batch_size": 16, **reference}))
    tr = Trainer(cfg)
    try:
        tr.setup()
        batch = collate_steps([tr.dataset[i] for i in range(len(tr.dataset))])
        return {k: v.clone() for k, v in tr.ref.items()}, batch
    finally:
        tr.close()


def test_cached_reference_logps_come_from_the_named_policy(data, tmp_path):
    ref, batch = _cache(data, tmp_path / "named", path=str(data.other))
    from_other, from_start = _logps(data.other, batch), _logps(data.start, batch)
    assert not torch.allclose(from_other, from_start, atol=1e-3), "the two policies must differ for this test"
    rows = batch["index"]
    assert torch.allclose(ref["chosen"][rows], from_other, atol=1e-4)
    # null (the default) keeps the starting policy as the reference
    ref_default, batch = _cache(data, tmp_path / "default")
    assert torch.allclose(ref_default["chosen"][batch["index"]], from_start, atol=1e-4)


def test_dpo_caches_both_sides_from_the_named_policy(data, tmp_path):
    ref, batch = _cache(data, tmp_path / "dpo", loss="dpo", path=str(data.other))
    assert torch.allclose(ref["chosen"][batch["index"]], _logps(data.other, batch), atol=1e-4)
    assert set(ref) == {"chosen", "rejected"}


def test_a_reference_that_reads_actions_differently_is_refused(data, tmp_path):
    wide = ActionStats(q01=data.stats.q01 - 1.0, q99=data.stats.q99 + 1.0, mask=data.stats.mask)
    odd = tiny_policy(wide, seed=1).save(tmp_path / "odd")
    with pytest.raises(TrainingError, match="discretises actions differently"):
        _cache(data, tmp_path / "out", path=str(odd))


@pytest.mark.parametrize("extra, needle", [
    ({"reference": {"path": "x", "mode": "online"}}, "reference.mode=cached"),
    ({"reference": {"path": "x"}, "loss": {"name": "apo", "z0_source": "mismatched"}}, "z0_source=batch"),
])
def test_reference_path_needs_cached_log_probs(tmp_path, extra, needle):
    cfg = tiny_train_config(tmp_path, [tmp_path / "d.h5"], policy_path=tmp_path / "p")
    cfg.update(extra)
    with pytest.raises(ConfigError, match=needle):
        load_train_config(cfg)
