"""Retrain jobs end to end (real bags, tiny policies): the promotion gate per robot (sim: simulated
success rate, real: held-out action L1), the expert-data warning in the status, the reference policy."""

import numpy as np
import pytest
import yaml

from apo_core.errors import ConfigError
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.retrain.evaluate import promotion_decision
from apo_trainer.retrain.job import RetrainManager, RetrainRequest, is_heldout
from apo_trainer.retrain.settings import PromotionEvalSettings, load_retrain_settings
from apo_trainer.testing import tiny_policy, write_expert_dataset

A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1,
                   "log_every": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}
EVERY = 2


def _episode_ids(n_train, n_heldout):
    """Bag names that the deterministic hold-out puts on the wanted sides (every EVERY-th, by hash)."""
    train, heldout = [], []
    for i in range(1000):
        ep = f"ep{i:03d}"
        side = heldout if is_heldout(ep, EVERY) else train
        side.append(ep)
        if len(train) >= n_train and len(heldout) >= n_heldout:
            return train[:n_train] + heldout[:n_heldout]
    raise AssertionError("no split found")


def _world(tmp_path, versions=1):
    stats = ActionStats.from_actions(np.stack([sample_action(i) for i in range(200)]))
    store = ModelStore(tmp_path / "models")
    for seed in range(versions):
        store.add(tiny_policy(stats, state_dim=9, seed=seed).save(tmp_path / f"p{seed}"))
    for i, ep in enumerate(_episode_ids(2, 1)):
        write_sample_bag(tmp_path / "bags", SampleEpisode(ep, [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                                         start_ns=(1_700_000_000 + 100 * i) * 10**9))
    return store


def _manager(tmp_path, sim_evaluator=None, **settings):
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"),
           "model_store": str(tmp_path / "models"), "defaults": {"steps": 3}, "train_overrides": TRAIN}
    for key, value in settings.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return RetrainManager(load_retrain_settings(cfg), sim_evaluator=sim_evaluator)


def _run(m, request=None):
    ok, job_id, reason = m.submit(request or RetrainRequest())
    assert ok, reason
    return reason, m.wait(600)


# A held-out L1 gate no candidate can pass (candidate L1 <= 1e-9 x deployed): "its held-out L1 is worse".
STRICT_L1 = {"heldout_every": EVERY, "max_l1_ratio": 1e-9}
# A couple of short simulated episodes per version, on the real simulator.
SIM = {"sim_episodes": 2, "sim_max_steps": 5, "sim_task": "Lift"}


@pytest.mark.sim
@pytest.mark.slow
def test_sim_robot_gates_on_success_rate_and_real_robot_on_heldout_l1(tmp_path):
    from apo_retrain.sim_gate import sim_success_rate  # the simulator evaluator the retrain node hands in

    store = _world(tmp_path)
    # real robot (the settings' default): the held-out action L1 decides, and it rejects the candidate
    reason, status = _run(_manager(tmp_path, eval={**STRICT_L1, **SIM}))
    assert "WARNING: no expert demonstrations" in reason  # no expert_data: said at once, in the reply too
    assert status.state == "rejected", status.message
    assert "candidate rejected" in status.message and "gate heldout_l1" in status.message
    assert status.heldout_episodes and {"heldout_l1_base", "heldout_l1_candidate"} <= set(status.metrics)
    assert "success_rate_candidate" not in status.metrics  # a real robot's gate never needs the simulator
    assert store.versions() == ["v0001"] and store.current_version() == "v0001"
    assert "WARNING: no expert demonstrations" in status.message and status.warnings

    # the same episodes, the same failed L1 criterion, in the sim graph (robot sim, eval.gate auto): the
    # simulated success rate decides; random tiny policies tie at 0 %, and a tie promotes
    m = _manager(tmp_path, sim_success_rate, robot="sim", eval={**STRICT_L1, **SIM})
    _, status = _run(m)
    assert status.state == "succeeded", status.message
    assert store.current_version() == "v0002" and status.metrics["promotion_gate"] == "sim_success_rate"
    assert status.metrics["heldout_l1_candidate"] > 1e-9 * status.metrics["heldout_l1_base"]  # L1 said no
    assert status.metrics["success_rate_candidate"] >= status.metrics["success_rate_base"]
    assert "gate sim_success_rate" in status.message and "WARNING: no expert demonstrations" in status.message


def test_injected_evaluator_decides_the_sim_gate(tmp_path):
    """The success rates come from the caller's evaluator (here plain Python, the node passes the
    simulator's): both versions on the same task, episodes, seed and step limit."""
    store = _world(tmp_path)
    calls = []

    def evaluator(policy_dir, *, task, episodes, seed, max_steps):
        calls.append((policy_dir, task, episodes, seed, max_steps))
        return 0.25 if policy_dir == store.path("v0001") else 0.5

    m = _manager(tmp_path, evaluator, eval={"gate": "sim_success_rate", "heldout_every": 0, **SIM, "sim_seed": 7})
    _, status = _run(m)
    assert status.state == "succeeded", status.message
    assert status.metrics["success_rate_base"] == 0.25 and status.metrics["success_rate_candidate"] == 0.5
    assert [c[1:] for c in calls] == [("Lift", 2, 7, 5)] * 2 and calls[0][0] == store.path("v0001")
    assert "simulated success rate 0.50 >= 1.0 x deployed 0.25" in status.message


def test_without_an_evaluator_the_sim_gate_is_a_config_error_and_auto_uses_the_l1(tmp_path):
    _world(tmp_path)
    for gate in ("sim_success_rate", "both"):
        with pytest.raises(ConfigError, match=f"eval.gate {gate} .* no sim_evaluator"):
            _manager(tmp_path, eval={"gate": gate})
    with pytest.raises(ConfigError, match="sim_evaluator must be a callable"):
        _manager(tmp_path, "apo_sim.rollout:success_rate", eval={"gate": "sim_success_rate"})
    # auto on a sim robot with no simulator here (a trainer-only install): the held-out L1 decides
    assert PromotionEvalSettings().effective_gate("sim", simulator=False) == "heldout_l1"
    m = _manager(tmp_path, robot="sim", eval={"heldout_every": EVERY})
    _, status = _run(m)
    assert status.state == "succeeded" and status.metrics["promotion_gate"] == "heldout_l1", status.message
    assert "success_rate_candidate" not in status.metrics


def test_an_evaluator_returning_no_rate_is_named():
    from apo_trainer.retrain.evaluate import checked_rate

    def broken(policy_dir, **kwargs):
        return None

    assert checked_rate(1, broken) == 1.0
    for bad in (None, 1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"evaluator .*broken returned .* not a success rate in \[0, 1\]"):
            checked_rate(bad, broken)


def test_promotion_decision_per_gate():
    ev = PromotionEvalSettings(max_l1_ratio=1.05, min_success_ratio=1.0)
    worse_l1, better_l1 = (0.10, 0.20), (0.20, 0.10)  # (deployed, candidate)
    # sim: success rate equal or better promotes whatever the L1 says; worse rejects whatever the L1 says
    assert promotion_decision("sim_success_rate", ev, worse_l1, (0.3, 0.3))[0]
    assert promotion_decision("sim_success_rate", ev, worse_l1, (0.3, 0.5))[0]
    ok, why = promotion_decision("sim_success_rate", ev, better_l1, (0.5, 0.3))
    assert not ok and "simulated success rate 0.30 < 1.0 x deployed 0.50" in why
    # real: the L1 decides, success rates are not consulted
    ok, why = promotion_decision("heldout_l1", ev, worse_l1, (0.1, 0.9))
    assert not ok and "held-out action L1 0.2000 > 1.05 x deployed 0.1000" in why
    assert promotion_decision("heldout_l1", ev, better_l1)[0]
    assert promotion_decision("heldout_l1", ev, None)[0]  # nothing held out yet
    # both: each must pass
    assert not promotion_decision("both", ev, worse_l1, (0.3, 0.5))[0]
    assert not promotion_decision("both", ev, better_l1, (0.5, 0.3))[0]
    assert promotion_decision("both", ev, better_l1, (0.3, 0.3))[0]
    with pytest.raises(ValueError, match="needs the simulated success rates"):
        promotion_decision("sim_success_rate", ev, better_l1)


def test_gate_settings():
    assert PromotionEvalSettings().effective_gate("sim") == "sim_success_rate"
    assert PromotionEvalSettings().effective_gate("real") == "heldout_l1"
    assert PromotionEvalSettings(gate="heldout_l1").effective_gate("sim") == "heldout_l1"
    defaults = load_retrain_settings({})
    assert defaults.robot == "real" and defaults.eval.gate == "auto" and defaults.reference == "previous"
    with pytest.raises(ConfigError, match="eval.sim_task"):
        load_retrain_settings({"robot": "sim", "eval": {"sim_task": "Juggle"}})
    load_retrain_settings({"robot": "real", "eval": {"sim_task": "Juggle"}})  # the L1 gate needs no simulator
    with pytest.raises(ConfigError, match="reference"):
        load_retrain_settings({"reference": "latest"})


def test_reference_base_and_expert_data(tmp_path):
    store = _world(tmp_path, versions=2)  # v0001 (say, the BC policy) and v0002, the deployed one
    expert = write_expert_dataset(tmp_path / "expert" / "demos.h5", n_episodes=2, length=12, image_size=16,
                                  state_dim=9)
    m = _manager(tmp_path, reference="base", expert_data=str(expert), eval={"heldout_every": 0})
    reason, status = _run(m)
    assert status.state == "succeeded", status.message
    assert status.base_version == "v0002" and status.reference_version == "v0001" and "reference v0001" in reason
    cfg = yaml.safe_load((m.jobs_dir / status.job_id / "train_config.yaml").read_text())
    assert cfg["policy"]["path"] == str(store.path("v0002"))
    assert cfg["reference"]["path"] == str(store.path("v0001")) and cfg["reference"]["batch_size"] == 8
    assert cfg["data"]["paths"][0] == str(expert)
    assert "WARNING" not in status.message and not status.warnings  # expert data given: no warning
    # previous (the default): the version being retrained is the reference, no separate path
    m = _manager(tmp_path, eval={"heldout_every": 0})
    assert m._reference_version("v0003") == "v0003"
    # a named version must exist
    m = _manager(tmp_path, reference="v0042", eval={"heldout_every": 0})
    ok, _, reason = m.submit(RetrainRequest(episodes=["ep000"]))
    assert not ok and "v0042" in reason and "not found" in reason


def test_evaluation_uses_the_configured_torch_threads():
    import torch

    from apo_trainer.retrain.evaluate import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):  # torch's own setting
        assert torch.get_num_threads() == before
    assert PromotionEvalSettings().torch_threads == 1
