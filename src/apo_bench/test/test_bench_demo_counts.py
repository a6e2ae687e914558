"""``demos.per_task``: a task whose base needs more demonstrations than the others gets its own count."""

import h5py
import pytest

from apo_bench.protocol import Protocol
from apo_bench.settings import load_bench_settings
from apo_core.config import ConfigError


def test_per_task_counts_set_each_tasks_demo_seeds_and_stay_disjoint_from_evaluation():
    s = load_bench_settings("default", overrides={"demos": {"episodes": 10, "per_task": {"Stack": 40}}})
    assert [s.demo_episodes(t) for t in ("Lift", "Stack", "PickPlaceCan")] == [10, 40, 10]
    assert s.demo_seeds(1, "Stack") == list(range(1000, 1040))
    assert s.demo_seeds(1, "Lift") == list(range(1000, 1010))
    # An evaluation range that reaches into Stack's larger demo range is refused, though Lift's would fit.
    with pytest.raises(ConfigError, match="evaluation seeds overlap"):
        load_bench_settings("default", overrides={"demos": {"per_task": {"Stack": 40}}, "eval": {"seed_base": 20}})
    load_bench_settings("default", overrides={"eval": {"seed_base": 20}, "tasks": ["Lift"],
                                              "train_seeds": [0], "lifelong": {"rounds": 0}})


@pytest.mark.parametrize("per_task, error", [
    ({"Stak": 40}, r"demos.per_task: unknown task\(s\) \['Stak'\]"),
    ({"Stack": 0}, "demos.per_task.Stack must be an integer >= 1, got 0"),
    ({"Stack": 1001}, "at most 1000 demo/interactive episodes"),
])
def test_bad_per_task_counts_are_refused(per_task, error):
    with pytest.raises(ConfigError, match=error):
        load_bench_settings("quick", overrides={"tasks": ["Lift", "Stack"], "demos": {"per_task": per_task}})


@pytest.mark.sim
def test_the_demo_cell_collects_the_tasks_own_count(tmp_path):
    s = load_bench_settings("quick", overrides={"image_size": 32, "demos": {"episodes": 1, "per_task": {"Lift": 2}}})
    with Protocol(s, tmp_path, progress=False) as protocol:
        out = protocol.collect("Lift", 0)
    assert out["seeds"] == [0, 1] and out["written"] == 2
    with h5py.File(protocol.work("Lift", 0) / "expert.h5") as f:
        assert len(f["data"]) == 2
