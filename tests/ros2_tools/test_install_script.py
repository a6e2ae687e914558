"""scripts/install_ros2_tools.sh on bad or missing sources: a clear message, and exit 3 (the ros2_tools tests
skip) only when there are no sources at all and the tools are not required (in CI they are: exit 1, so
.ci/run fails instead of skipping). Runs in a copy of the script, so the real overlay is untouched."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A repo with the script, its pins and the project venv, and no ../shared next to it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "requirements").mkdir()
    shutil.copy(ROOT / "scripts/install_ros2_tools.sh", repo / "scripts")
    shutil.copy(ROOT / "requirements/ros2-tools.txt", repo / "requirements")
    (repo / ".venv").symlink_to(ROOT / ".venv")
    return repo


def _install(repo: Path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ROS_DISTRO", "APO_ROS2_TOOLS_SRC", "CI", "APO_REQUIRE_ROS2_TOOLS")}
    return subprocess.run(["bash", str(repo / "scripts/install_ros2_tools.sh")], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_no_sources_and_no_ros2_install_exits_3_with_the_reason(repo_copy):
    done = _install(repo_copy)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no ROS 2 tool sources" in done.stdout and "APO_ROS2_TOOLS_SRC" in done.stdout
    assert not (repo_copy / ".ros2-tools/.stamp").exists()


@pytest.mark.parametrize("env", [{"CI": "true"}, {"APO_REQUIRE_ROS2_TOOLS": "1"}])
def test_no_sources_in_ci_is_a_failure_not_a_skip(repo_copy, env):
    done = _install(repo_copy, **env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no ROS 2 tool sources" in done.stderr and "required here" in done.stderr


def test_a_missing_source_directory_is_an_error(repo_copy, tmp_path):
    done = _install(repo_copy, APO_ROS2_TOOLS_SRC=str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert "APO_ROS2_TOOLS_SRC=" in done.stderr and "is not a directory" in done.stderr


def test_a_source_directory_without_its_tarball_list_is_an_error(repo_copy, tmp_path):
    (tmp_path / "empty").mkdir()
    done = _install(repo_copy, APO_ROS2_TOOLS_SRC=str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "has no SOURCES.txt" in done.stderr


def test_a_source_directory_without_tarballs_is_an_error(repo_copy, tmp_path):
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed/SOURCES.txt").write_text("launch 0 2024-12-20\n")
    done = _install(repo_copy, APO_ROS2_TOOLS_SRC=str(tmp_path / "listed"))
    assert done.returncode == 1
    assert "has no *.tar.gz tarballs" in done.stderr


def test_a_source_directory_missing_a_tarball_is_an_error(repo_copy, tmp_path):
    src = tmp_path / "partial"
    src.mkdir()
    (src / "SOURCES.txt").write_text("launch 0 2024-12-20\n")
    subprocess.run(["tar", "czf", str(src / "launch.tar.gz"), "-C", str(tmp_path), "partial/SOURCES.txt"], check=True)
    done = _install(repo_copy, APO_ROS2_TOOLS_SRC=str(src))
    assert done.returncode == 1
    assert "has no launch tarball" in done.stderr
