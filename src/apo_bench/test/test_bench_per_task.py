"""``demos.episodes_per_task`` and ``bc.steps_per_task``: a task whose base needs more demonstrations or a
longer fit than the others gets its own count."""

import json

import h5py
import pytest

from apo_bench.protocol import Protocol
from apo_bench.settings import load_bench_settings
from apo_core.config import ConfigError
from apo_trainer.testing import TINY_POLICY_SECTION


def test_per_task_counts_set_each_tasks_demo_seeds_and_stay_disjoint_from_evaluation():
    # Both per-task counts named here: the shipped file's own counts merge under these overrides.
    s = load_bench_settings("default", overrides={"demos": {"episodes": 10,
                                                            "episodes_per_task": {"Stack": 40, "PickPlaceCan": 12}}})
    assert [s.demo_episodes(t) for t in ("Lift", "Stack", "PickPlaceCan")] == [10, 40, 12]
    assert s.demo_seeds(1, "Stack") == list(range(1000, 1040))
    assert s.demo_seeds(1, "Lift") == list(range(1000, 1010))
    # An evaluation range that reaches into Stack's larger demo range is refused, though Lift's would fit.
    with pytest.raises(ConfigError, match="evaluation seeds overlap"):
        load_bench_settings("default", overrides={"demos": {"episodes_per_task": {"Stack": 40}}, "eval": {"seed_base": 20}})
    load_bench_settings("default", overrides={"eval": {"seed_base": 20}, "tasks": ["Lift"],
                                              "train_seeds": [0], "lifelong": {"rounds": 0}})


@pytest.mark.parametrize("section, per_task, error", [
    ("demos", {"Stak": 40}, r"demos.episodes_per_task: unknown task\(s\) \['Stak'\]"),
    ("demos", {"Stack": 0}, "demos.episodes_per_task.Stack must be an integer >= 1, got 0"),
    ("demos", {"Stack": 1001}, "at most 1000 demo/interactive episodes"),
    ("bc", {"Stack": 2.5}, "bc.steps_per_task.Stack: expected an integer, got 2.5"),
    ("bc", {"Door": 100}, r"bc.steps_per_task: unknown task\(s\) \['Door'\]"),
])
def test_bad_per_task_counts_are_refused(section, per_task, error):
    key = "episodes_per_task" if section == "demos" else "steps_per_task"
    with pytest.raises(ConfigError, match=error):
        load_bench_settings("quick", overrides={"tasks": ["Lift", "Stack"], section: {key: per_task}})


def test_bc_steps_per_task():
    s = load_bench_settings("default", overrides={"bc": {"steps": 600,
                                                         "steps_per_task": {"Stack": 2000, "PickPlaceCan": 900}}})
    assert [s.bc_steps(t) for t in ("Lift", "Stack", "PickPlaceCan")] == [600, 2000, 900]


@pytest.mark.sim
def test_the_demo_and_base_cells_use_the_tasks_own_counts(tmp_path):
    s = load_bench_settings("quick", overrides={
        "image_size": 32, "max_steps": {"Lift": 5}, "demos": {"episodes": 1, "episodes_per_task": {"Lift": 2}},
        "bc": {"steps": 2, "steps_per_task": {"Lift": 3}, "batch_size": 4,
               "overrides": {"policy": TINY_POLICY_SECTION}}})
    with Protocol(s, tmp_path, progress=False) as protocol:
        out = protocol.collect("Lift", 0)
        protocol.train_base("Lift", 0)
    assert out["seeds"] == [0, 1] and out["written"] == 2
    with h5py.File(protocol.work("Lift", 0) / "expert.h5") as f:
        assert len(f["data"]) == 2
    metrics = json.loads((protocol.policy_dir("Lift", 0, "base_run") / "metrics.json").read_text())
    assert metrics["final"]["step"] == 3
