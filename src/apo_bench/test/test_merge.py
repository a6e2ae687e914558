"""`apo bench --merge-from`: pieces of one table run in separate output directories become one, and nothing
that would mix two set-ups (other settings, a cell computed differently on two sides) gets in.

The whole path through the real command (a quick run split in two, merged, rerun with nothing to compute,
the same tables) is in test_bench_quick.py; these are the refusals and the bookkeeping.
"""

import json

import pytest

from apo_bench.cells import CellStore
from apo_bench.merge import merge_runs
from apo_bench.run_settings import FILE_NAME, check_and_record
from apo_bench.settings import load_bench_settings
from apo_core.errors import ConfigError


def _settings(**overrides):
    return load_bench_settings("quick", None, overrides)


def _piece(root, seed: int, settings=None, base_success=True):
    """An output directory as a `--only seed=N` run leaves it: its settings, cells and work files."""
    root.mkdir(parents=True, exist_ok=True)
    check_and_record(root, settings or _settings())
    store = CellStore(root)
    policy = root / "work" / "Lift" / f"s{seed}" / "policies" / "base"
    policy.mkdir(parents=True)
    (policy / "model.safetensors").write_bytes(bytes([seed]) * 64)
    (root / "work" / "Lift" / f"s{seed}" / "expert.h5").write_bytes(b"h5" * 10)
    store.put(f"demos/Lift/s{seed}", {"written": 3, "failed": 0, "steps": 90, "seeds": [0, 1, 2], "seconds": 1.5})
    store.put(f"base/Lift/s{seed}", {"policy": str(policy), "steps": 60, "final": {"loss": 0.5, "step_time_s": 0.35},
                                     "seconds": 9.0})
    store.put(f"eval/Lift/s{seed}/base/none", {"episodes": [{"seed": 70000, "success": base_success, "steps": 40}],
                                               "seconds": 3.0})
    return store


def test_disjoint_pieces_merge_with_their_work_files_and_paths_pointing_here(tmp_path):
    a, b, out = tmp_path / "s0", tmp_path / "s1", tmp_path / "all"
    _piece(a, 0)
    _piece(b, 1)
    # What b's killed run left half done: a policy being published, a cell being written.
    unfinished = b / "work" / "Lift" / "s1" / "policies" / "dagger_r1.tmp"
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"half")
    (b / "work" / "Lift" / "s1" / "expert.h5.merging").write_bytes(b"half")
    # A training killed part-way (its cache is keyed by b's data paths, useless elsewhere), and the finished
    # base training's own directory (its config and metrics).
    killed = b / "work" / "Lift" / "s1" / "policies" / "apo_r1_run"
    killed.mkdir()
    (killed / "reference_logps.safetensors").write_bytes(b"b's paths")
    (b / "work" / "Lift" / "s1" / "policies" / "base_run").mkdir()
    (b / "work" / "Lift" / "s1" / "policies" / "base_run" / "config.yaml").write_text("train: {}")
    out.mkdir()
    check_and_record(out, _settings())
    summary = merge_runs(out, [a, b], _settings())
    assert summary.cells_added == {str(a.resolve()): 3, str(b.resolve()): 3} and summary.files_copied == 5
    assert not (out / "work" / "Lift" / "s1" / "policies" / "apo_r1_run").exists()  # trained again here
    assert (out / "work" / "Lift" / "s1" / "policies" / "base_run" / "config.yaml").is_file()
    cells = CellStore(out).all()
    assert set(cells) == {f"{kind}/Lift/s{s}" for kind in ("demos", "base") for s in (0, 1)} | {
        f"eval/Lift/s{s}/base/none" for s in (0, 1)}
    policy = out.resolve() / "work" / "Lift" / "s1" / "policies" / "base"
    assert cells["base/Lift/s1"]["policy"] == str(policy)  # the merged directory's copy, not the piece's
    assert (policy / "model.safetensors").read_bytes() == bytes([1]) * 64
    assert not list(out.rglob("*.merging")) and not list(out.rglob("*.tmp"))  # the unfinished files stayed behind
    # Merging again adds nothing: every cell is already here with the same result.
    again = merge_runs(out, [a, b], _settings())
    assert sum(again.cells_added.values()) == 0 and again.cells_same == 6 and again.files_copied == 0


def test_a_cell_both_sides_computed_alike_is_kept_once_whatever_it_took(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "all"
    _piece(a, 0)
    store_b = _piece(b, 0)  # the same seed's shared cells, computed again (same machine kind: same results)
    store_b.put("eval/Lift/s0/apo_r1/none", {"episodes": [{"seed": 70000, "success": False, "steps": 40}],
                                             "seconds": 4.0})
    # b's run was slower: only the times differ, the cell's and its last training step's.
    store_b.put("demos/Lift/s0", {**store_b.get("demos/Lift/s0"), "seconds": 99.0})
    base = store_b.get("base/Lift/s0")
    store_b.put("base/Lift/s0", {**base, "final": {**base["final"], "step_time_s": 0.46}})
    summary = merge_runs(out, [a, b], _settings())
    assert summary.cells_added == {str(a.resolve()): 3, str(b.resolve()): 1}
    assert set(CellStore(out).all()) == {"demos/Lift/s0", "base/Lift/s0", "eval/Lift/s0/base/none",
                                         "eval/Lift/s0/apo_r1/none"}


def test_a_cell_computed_differently_on_two_sides_is_refused_and_nothing_is_written(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "all"
    _piece(a, 0)
    _piece(b, 0, base_success=False)  # another machine kind re-drew this scene
    out.mkdir()
    check_and_record(out, _settings())
    with pytest.raises(ConfigError, match=r"1 cell\(s\) hold different results.*eval/Lift/s0/base/none.*Nothing "
                                          r"was written"):
        merge_runs(out, [a, b], _settings())
    assert not CellStore(out).all() and not (out / "work").exists()


def test_a_cell_already_here_that_differs_is_refused(tmp_path):
    a, out = tmp_path / "a", tmp_path / "all"
    _piece(a, 0)
    _piece(out, 0, base_success=False)
    before = {p.name: p.read_text() for p in (out / "cells").glob("*.json")}
    with pytest.raises(ConfigError, match=r"eval/Lift/s0/base/none \(.* vs here\)"):
        merge_runs(out, [a], _settings())
    assert {p.name: p.read_text() for p in (out / "cells").glob("*.json")} == before


def test_a_piece_run_with_other_settings_is_refused_with_the_key_named(tmp_path):
    a, out = tmp_path / "a", tmp_path / "all"
    _piece(a, 0, settings=_settings(bc={"lr": 0.5}))
    with pytest.raises(ConfigError, match=r"--merge-from .*a: .*other settings.*bc\.lr: 0\.5 there, 0\.001 now"):
        merge_runs(out, [a], _settings())
    assert not CellStore(out).all()


def test_more_seeds_or_another_speed_in_a_piece_are_not_a_difference(tmp_path):
    a, out = tmp_path / "a", tmp_path / "all"
    _piece(a, 1, settings=_settings(train_seeds=[0, 1, 2], eval={"workers": 1}, torch_threads=2))
    assert sum(merge_runs(out, [a], _settings()).cells_added.values()) == 3


def test_what_is_not_a_bench_output_directory_is_refused(tmp_path):
    out = tmp_path / "all"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"no {FILE_NAME} there"):
        merge_runs(out, [tmp_path / "empty"], _settings())
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / FILE_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        merge_runs(out, [tmp_path / "corrupt"], _settings())
    _piece(out, 0)
    with pytest.raises(ConfigError, match="this run's own --out"):
        merge_runs(out, [out], _settings())
    assert json.loads((out / FILE_NAME).read_text())["bc.lr"] == _settings().bc.lr
