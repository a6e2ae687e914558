"""The upstream ROS 2 tools for the ros2_tools tests: installed by scripts/install_ros2_tools.sh from the
sources in ../shared/vendor/ros2-tools (or APO_ROS2_TOOLS_SRC), or a sourced ROS 2 install's own.

Without sources and without a ROS 2 install these tests skip (in CI, CI=true, they fail: the script exits 1);
with sources, a failed install fails them.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_TOOLS = 3  # install_ros2_tools.sh: no sources and no ROS 2 install sourced


def sourced_env(*scripts: Path, base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) after `source`-ing each of ``scripts`` in bash."""
    line = " && ".join(f'source "{script}"' for script in scripts) + " && env -0"
    done = subprocess.run(["bash", "-c", line], env=base or dict(os.environ), capture_output=True, timeout=120)
    assert done.returncode == 0, f"sourcing {scripts} failed:\n{done.stderr.decode(errors='replace')}"
    return dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)


@pytest.fixture(scope="session")
def ros2_env() -> dict:
    """The environment with `ros2`, `colcon` and launch_pytest's pytest (APO_PYTEST7_PATH)."""
    done = subprocess.run(["bash", str(ROOT / "scripts/install_ros2_tools.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=3600)
    out = done.stdout + done.stderr
    if done.returncode == NO_TOOLS:
        pytest.skip("the upstream ROS 2 tools are not available: no sources in ../shared/vendor/ros2-tools, "
                    "APO_ROS2_TOOLS_SRC unset and no ROS 2 install sourced (ROS_DISTRO, ros2 on PATH)")
    if done.returncode != 0:
        pytest.fail(f"scripts/install_ros2_tools.sh failed (exit {done.returncode}):\n{out}")
    return sourced_env(ROOT / "scripts/env.sh", ROOT / "scripts/ros2_tools_env.sh")


@pytest.fixture(scope="module")
def workspace_install(ros2_env, tmp_path_factory) -> Path:
    """The workspace's packages built by `colcon build --symlink-install` into a temporary install base."""
    base = tmp_path_factory.mktemp("colcon")
    cmd = ["colcon", "--log-base", str(base / "log"), "build", "--symlink-install", "--base-paths", "src",
           "--build-base", str(base / "build"), "--install-base", str(base / "install")]
    done = subprocess.run(cmd, cwd=ROOT, env=ros2_env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"colcon build failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-12000:]}"
    return base / "install"


@pytest.fixture(scope="module")
def install_env(ros2_env, workspace_install) -> dict:
    """The tools' environment with the colcon install sourced (`source install/setup.bash`)."""
    return sourced_env(workspace_install / "setup.bash", base=ros2_env)
