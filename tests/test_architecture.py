"""The layer rules of pyproject.toml ([tool.importlinter]) hold: apo_core is ROS-free and stands alone,
apo_trainer imports no ROS / simulator / recorder / node package, node packages do not import each other,
apo_ros is the ROS layer over apo_core only, nothing imports the apo command (apo_cli), apo_bringup is launch
support only, no import cycles inside a package (apo_robot_adapters included). `lint-imports` reads the real source tree; its report is the failure message."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the venv's (requirements/dev.txt)


def run_lint_imports(*args: str) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.is_file(), f"{LINT_IMPORTS} is missing: run bash scripts/setup.sh (requirements/dev.txt)"
    # --no-cache: nothing written into the checkout, and an edit is never hidden by a stale graph
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


def test_import_linter_contracts_are_kept():
    result = run_lint_imports()
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports found broken layer rules:\n{report}"
    assert "0 broken" in report and "Contracts: 7 kept" in report, report


def test_import_linter_reports_a_broken_rule(tmp_path):
    """The check has teeth: a config whose one contract the tree breaks (apo_retrain does import apo_trainer)
    fails with a report naming the import."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["apo_retrain", "apo_trainer"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "retrain node without trainer"\ntype = "forbidden"\n'
                      'source_modules = ["apo_retrain"]\nforbidden_modules = ["apo_trainer"]\n')
    result = run_lint_imports("--config", str(config))
    report = result.stdout + result.stderr
    assert result.returncode != 0, report
    assert "BROKEN" in report and "apo_retrain.retrain_node -> apo_trainer" in report, report


# Class names that still mean two things in two packages (to be renamed by the packages' owners); the
# test fails when one of them is fixed (shrink the list) or when a new one appears.
KNOWN_SHARED_CLASS_NAMES: dict[str, set[str]] = {}


def test_one_meaning_per_class_name():
    """A top-level class name is defined in one module of the packages (tests excluded): Observation is the
    policy's, BagMessage the bag library's, a Decision is always qualified (MuxDecision, OperatorDecision,
    RecordingDecision)."""
    import ast

    where: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src").glob("*/*/**/*.py")):
        rel = path.relative_to(ROOT / "src")
        if rel.parts[0] != rel.parts[1] or "test" in rel.parts or "build" in rel.parts:
            continue  # only the importable package (src/<pkg>/<pkg>/...), not tests or build copies
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, set()).add(".".join(rel.with_suffix("").parts[1:]))
    shared = {name: {m.split(".")[0] for m in mods} for name, mods in where.items() if len(mods) > 1}
    assert shared == KNOWN_SHARED_CLASS_NAMES, {n: sorted(where[n]) for n in shared}
    for name in ("Observation", "BagMessage"):
        assert len(where[name]) == 1, where[name]
    assert "Decision" not in where
