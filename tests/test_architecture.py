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
