"""`apo bench` through the real `apo` entry point: help, strict settings, the recorded command line."""

import subprocess
import sys

import pytest

from apo_cli.cli import build_parser


def _apo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "apo_cli.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_apo_bench_help_lists_the_bench_options():
    r = _apo("bench", "--help")
    assert r.returncode == 0, r.stderr
    for option in ("--preset", "--out", "--only", "--set", "--eval-seed-base", "--quiet"):
        assert option in r.stdout
    assert "usage: apo bench" in r.stdout
    top = _apo("--help")
    assert top.returncode == 0 and "bench" in top.stdout


def test_a_bad_set_key_exits_2_with_the_key_named_and_writes_nothing(tmp_path):
    out = tmp_path / "bench"
    r = _apo("bench", "--preset", "quick", "--out", str(out), "--set", "eval.episodez=3")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "apo: error: unknown config key 'eval.episodez'" in r.stderr
    assert "did you mean 'episodes'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()  # settings are checked before anything is created
    r = _apo("bench", "--preset", "quick", "--out", str(out), "--set", "eval.episodes")
    assert r.returncode == 2 and "must look like key=value" in r.stderr
    r = _apo("bench", "--preset", "nosuch", "--out", str(out))
    assert r.returncode == 2 and "unknown bench preset 'nosuch'" in r.stderr


def test_bench_subcommand_runs_apo_bench_and_keeps_its_own_arguments(monkeypatch):
    import apo_bench.cli
    import apo_cli.cli

    seen = {}

    def fake_run(args):
        seen["args"] = args
        return 0

    monkeypatch.setattr(apo_bench.cli, "run", fake_run)
    argv = ["bench", "--preset", "quick", "--out", "runs/bench", "--only", "method=apo", "--set", "eval.episodes=2"]
    assert apo_cli.cli.main(argv) == 0
    args = seen["args"]
    assert args.argv == argv[1:]  # recorded in results.json/md as "apo bench <args>"
    assert (args.preset, args.out, args.only, args.set) == ("quick", "runs/bench", ["method=apo"],
                                                            ["eval.episodes=2"])


def test_demo_task_choices_come_from_the_simulator_registry(capsys):
    from apo_sim.env import TASKS

    assert "PickPlaceCan" in TASKS
    for task in TASKS:
        assert build_parser().parse_args(["demo", "--task", task]).task == task
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", "--task", "Door"])
    assert exc.value.code == 2
    assert "invalid choice: 'Door'" in capsys.readouterr().err
