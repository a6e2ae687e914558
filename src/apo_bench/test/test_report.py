"""The report's paired comparison with the base: counts per scene and McNemar's exact test."""

import pytest
from scipy.stats import binomtest

from apo_bench.report import mcnemar_p, paired_table


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (5, 0), (0, 5), (9, 14), (5, 9), (12, 12), (1, 30)])
def test_mcnemar_p_is_the_exact_binomial_test_on_discordant_scenes(only_a, only_b):
    n = only_a + only_b
    expected = binomtest(only_a, n, 0.5).pvalue if n else 1.0
    assert mcnemar_p(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def _rec(method, seed, success, round_=1, task="Lift", train_seed=0, perturbation="none"):
    return {"method": method, "round": 0 if method == "base" else round_, "task": task, "train_seed": train_seed,
            "seed": seed, "success": success, "perturbation": perturbation, "steps": 10}


def test_paired_table_matches_scenes_by_task_training_seed_and_scene():
    base = [_rec("base", s, s < 3) for s in range(6)] + [_rec("base", 0, True, train_seed=1)]
    apo = [_rec("apo", s, s in (1, 2, 3, 4)) for s in range(6)] + [_rec("apo", 0, False, train_seed=1)]
    noise = [_rec("apo", 0, True, round_=2), _rec("apo", 1, True, perturbation="texture"),
             _rec("base", 9, True, perturbation="texture")]  # other rounds and perturbed scenes are not paired
    rows = paired_table(base + apo + noise)
    assert rows[0][0] == "method vs base" and len(rows) == 2
    # scenes 0..5 of seed 0 + scene 0 of seed 1: both {1, 2}; only apo {3, 4}; only base {0, (s1, 0)}; neither {5}
    assert rows[1] == ["apo", "7", "2", "2", "2", "1", f"{binomtest(2, 4, 0.5).pvalue:.3f}"]
    assert paired_table(base) == [rows[0]]  # nothing to pair: header only
