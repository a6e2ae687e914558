"""bench/compare_variants.py: a note's rows recomputed from bench cells and retrain_variant records."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "bench" / "compare_variants.py"


def _tool():
    spec = importlib.util.spec_from_file_location("compare_variants", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _cell(bench: Path, task: str, seed: int, policy: str, won: set[int], scenes=range(70000, 70010)):
    cells = bench / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    episodes = [{"seed": s, "success": s in won, "steps": 50} for s in scenes]
    (cells / f"eval__{task}__s{seed}__{policy}__none.json").write_text(
        json.dumps({"policy": policy, "perturbation": "none", "episodes": episodes, "seconds": 1.0}))


def _variant(path: Path, won: set[int], episodes=10, seed_base=None):
    d = {"name": path.stem, "episodes": episodes, "successes": len(won), "success_seeds": sorted(won)}
    if seed_base is not None:
        d["seed_base"] = seed_base
    path.write_text(json.dumps(d))


def test_rows_pool_seeds_and_pair_scene_by_scene(tmp_path, capsys):
    tool = _tool()
    bench = tmp_path / "bench"
    _cell(bench, "Stack", 0, "base", {70000, 70001, 70002})
    _cell(bench, "Stack", 1, "base", {70005})
    _cell(bench, "Stack", 0, "apo_r1", {70000, 70003})
    _cell(bench, "Stack", 1, "apo_r1", {70005, 70006, 70007})
    _variant(tmp_path / "ctrl_s0.json", {70001})          # an older record: no seed_base, the bench's 70000
    _variant(tmp_path / "ctrl_s1.json", set(), seed_base=70000)
    rc = tool.main(["--bench", str(bench), "--task", "Stack", "--seeds", "0,1", "base=base", "apo=apo_r1",
                    f"ctrl={tmp_path}/ctrl_s{{s}}.json"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in out.splitlines()[2:]}
    assert rows["base"][0] == "3 / 1" and rows["base"][1].startswith("20.0 % [")
    assert rows["apo"][0] == "2 / 3" and rows["apo"][1].startswith("25.0 %")
    # apo: s0 gains 70003, loses 70001 and 70002; s1 gains 70006 and 70007
    assert rows["apo"][2] == "+3 / -2, p 1.00"
    assert rows["ctrl"][2] == "+0 / -3, p 0.25"


def test_rows_on_other_scenes_are_refused(tmp_path, capsys):
    tool = _tool()
    bench = tmp_path / "bench"
    _cell(bench, "Lift", 0, "base", {70000})
    _variant(tmp_path / "v_s0.json", {80001}, seed_base=80000)
    rc = tool.main(["--bench", str(bench), "--seeds", "0", "base=base", f"v={tmp_path}/v_s{{s}}.json"])
    assert rc == 2
    assert "different scenes" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read it"),
    (json.dumps({"episodes": 10}), "not a retrain_variant.py record"),
    (json.dumps({"episodes": 10, "successes": 2, "success_seeds": [70001]}), "do not match"),
    (json.dumps({"episodes": 10, "successes": 1, "success_seeds": [90000]}), "do not match"),
])
def test_a_broken_record_is_named(tmp_path, capsys, content, message):
    tool = _tool()
    (tmp_path / "v_s0.json").write_text(content)
    rc = tool.main(["--seeds", "0", f"v={tmp_path}/v_s{{s}}.json"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "v_s0.json" in err


def test_missing_rows_and_bad_arguments_are_clear(tmp_path, capsys):
    tool = _tool()
    assert tool.main(["--bench", str(tmp_path), "base=base"]) == 2
    assert "no record found" in capsys.readouterr().err
    assert tool.main(["base=base"]) == 2
    assert "give --bench DIR" in capsys.readouterr().err
    assert tool.main(["justaname"]) == 2
    assert "NAME=SPEC" in capsys.readouterr().err
