"""The project's ROS 2 face with the real upstream tools: `colcon build --symlink-install` of the workspace,
every command of the README's tool table run as the README says (`ros2 run <package> <command>`), then the
graph started by the README's `ros2 launch` line under launch_pytest: the simulated arm
(launch_graph/deploy_graph_launch.py: nodes, topics, command rate, the README's retrain lines, Ctrl-C) and
a real arm's standard interfaces through the robot adapters (launch_graph/servo_graph_launch.py,
robot:=servo: camera, joint states and pose in, TwistStamped and gripper positions out, Ctrl-C).

launch_pytest 3.7.1 does not load under this suite's pytest (>= 8.4, ros2/launch#947), so that file runs
in a subprocess under pytest 7.4.4 (APO_PYTEST7_PATH) and this test checks its exit code.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from apo_core.normalization import ActionStats
from apo_trainer.testing import tiny_policy

pytestmark = [pytest.mark.ros2_tools, pytest.mark.ros, pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TESTS = Path(__file__).parent / "launch_graph"


def run(cmd: list[str], *, timeout: float, **kwargs) -> str:
    """Run ``cmd``; its output (shown in the failure when it exits non-zero)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{out[-12000:]}"
    return out


def test_colcon_build_installs_every_package(workspace_install):
    assert (workspace_install / "setup.bash").is_file()
    packages = sorted(p.parent.name for p in (ROOT / "src").glob("*/package.xml"))
    missing = [p for p in packages if not (workspace_install / p / "share" / p / "package.xml").is_file()]
    assert not missing, f"not installed by colcon: {missing}"
    assert (workspace_install / "apo_bringup/share/apo_bringup/launch/deploy.launch.py").exists()


def _readme_tool_table() -> list[tuple[str, str]]:
    """(package, command) of each row of the README's "## Tools" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Tools\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        # cells split at unescaped pipes (the LeRobot row writes `v3.0\|v2.1` in one cell)
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))] if line.startswith("| `") else []
        if len(cells) >= 2:
            command = re.match(r"`([^` ]+)", cells[0]).group(1)
            package = cells[1].strip("`")
            rows.append((package, command))
    assert len(rows) >= 10, f"README's tool table not found or too short: {rows}"
    return sorted(set(rows))


def test_every_tool_of_the_readme_runs_as_the_readme_says_after_colcon(install_env, workspace_install):
    """With `source install/setup.bash`, each command of the tool table is run as `ros2 run PACKAGE COMMAND`
    (the README's words: colcon puts ament_python scripts in install/<package>/lib/<package>/, not on PATH)."""
    failed = []
    for package, command in _readme_tool_table():
        prefix = run(["ros2", "pkg", "prefix", package], env=install_env, timeout=120).strip()
        assert Path(prefix) == workspace_install / package, f"{package} found at {prefix}, not in the colcon install"
        done = subprocess.run(["ros2", "run", package, command, "--help"], env=install_env, capture_output=True,
                              text=True, timeout=300, cwd=workspace_install.parent)
        if done.returncode != 0 or "usage" not in done.stdout.lower():
            failed.append(f"ros2 run {package} {command} --help -> exit {done.returncode}\n"
                          f"{(done.stdout + done.stderr)[-2000:]}")
    assert not failed, "\n\n".join(failed)


def test_every_node_of_every_robot_choice_is_an_installed_executable(install_env, workspace_install):
    """What `ros2 launch apo_bringup deploy.launch.py robot:=...` starts for each robot: (sim, real, servo,
    ros2_control) and operator, each an executable `ros2 pkg executables` lists in the colcon install."""
    from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph

    graph = load_graph_file(default_graph_path())
    wanted = set()
    for robot in graph.arguments["robot"].choices:
        for operator in graph.arguments["operator"].choices:
            wanted |= {(s.package, s.executable) for s in resolve_graph(graph, {"robot": robot, "operator": operator})}
    listed = set()
    for package in sorted({p for p, _ in wanted}):
        out = run(["ros2", "pkg", "executables", package], env=install_env, timeout=120)
        listed |= {tuple(line.split()) for line in out.splitlines() if line.strip()}
    assert wanted <= listed, f"not installed as executables: {sorted(wanted - listed)}"
    for package, executable in wanted:
        assert (workspace_install / package / "lib" / package / executable).exists(), (package, executable)


def _readme_models_command(verb: str, *args: str) -> list[str]:
    """The README's `ros2 run ... apo models VERB` line on ./runs/models, its example path replaced by ``args``."""
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines()
             if ln.strip().startswith("ros2 run ") and f" models {verb} " in ln]
    assert lines, f"README.md has no `ros2 run ... apo models {verb}` line"
    words = shlex.split(lines[0], comments=True)
    words[words.index("--store") + 1] = "runs/models"
    if "--unnorm-key" in words:  # for an OpenVLA checkpoint with several datasets; the tiny policy has one
        del words[words.index("--unnorm-key"):words.index("--unnorm-key") + 2]
    at = words.index(verb) + 1
    tail = words[at:]
    if tail and not tail[0].startswith("--"):  # the README's example directory
        tail = tail[1:]
    return words[:at] + list(args) + tail


def _retrain_config(path: Path) -> Path:
    """config/retrain.yaml with cheap jobs: few steps, the held-out L1 gate instead of simulated episodes."""
    cfg = yaml.safe_load((ROOT / "config/retrain.yaml").read_text())
    cfg["defaults"]["steps"] = 4
    cfg["eval"]["gate"] = "heldout_l1"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_deploy_graph_under_launch_pytest(install_env, tmp_path):
    env = dict(install_env)
    q = np.full(7, 1.0)
    policy = tiny_policy(ActionStats(q01=-q, q99=q, mask=[True] * 6 + [False]), state_dim=9, seed=3)
    policy_dir = policy.save(tmp_path / "checkpoint")
    launch_dir = tmp_path / "robot"
    launch_dir.mkdir()
    print(run(_readme_models_command("import", str(policy_dir)), cwd=launch_dir, env=env, timeout=600))
    listed = run(_readme_models_command("list"), cwd=launch_dir, env=env, timeout=600)
    assert "v0001" in listed, listed

    env["APO_TEST_RETRAIN_CONFIG"] = str(_retrain_config(tmp_path / "retrain.yaml"))
    env["PYTHONPATH"] = env["APO_PYTEST7_PATH"] + ":" + env.get("PYTHONPATH", "")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the venv's plugins are for pytest 9
    log = tmp_path / "launch_pytest.log"  # a file, not a pipe: nothing left behind can hold it open
    with log.open("w") as sink:
        done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(LAUNCH_TESTS / "pytest.ini"), "-v", "-rA",
                               "--tb=short", str(LAUNCH_TESTS / "deploy_graph_launch.py"),
                               str(LAUNCH_TESTS / "servo_graph_launch.py")],
                              cwd=launch_dir, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                              stderr=subprocess.STDOUT, timeout=3000)
    out = log.read_text(errors="replace")
    print(out)
    assert "pytest-7.4.4" in out, "the launch_pytest run did not use pytest 7.4.4"
    assert done.returncode == 0, f"launch_pytest run failed (exit {done.returncode}):\n{out[-20000:]}"
