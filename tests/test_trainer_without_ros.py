"""The offline trainer installs and works where ROS does not (the GPU box of docker/trainer.Dockerfile).

A fresh venv gets torch the way scripts/setup.sh installs it (the same pin, the same pip configuration,
pip's cache), then src/apo_core and src/apo_trainer with the dependencies their setup.py declare,
constrained to requirements/trainer.txt's pins. No ROS wheel and no simulator may come with them. In that
venv, `apo-convert` turns bags written by the recorder's own writer (made here, in the project venv)
into a dataset, and `apo-train` runs a few APO steps of a tiny policy on it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from apo_trainer.testing import tiny_policy, tiny_train_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def torch_pin() -> str:
    """scripts/setup.sh's TORCH_PIN: the CPU wheel it installs first, so nothing pulls a CUDA build."""
    found = re.search(r'^TORCH_PIN="([^"]+)"', (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    assert found, "scripts/setup.sh no longer sets TORCH_PIN"
    return found.group(1)


def base_python() -> str:
    """The interpreter scripts/setup.sh builds .venv from (APO_PYTHON, else python3.11)."""
    python = os.environ.get("APO_PYTHON") or shutil.which("python3.11")
    if not python:
        pytest.fail("no python3.11 to create the trainer venv with (set APO_PYTHON)")
    return python


def clean_env(venv: Path) -> dict:
    """The environment of a shell that activated only ``venv``: nothing of the project venv or of ROS."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH",
            "ROS_DISTRO", "ROS_VERSION", "CMAKE_PREFIX_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env.get("PATH", "").split(os.pathsep)
                                                        if not p.startswith(str(ROOT / ".venv")))])
    env.update(VIRTUAL_ENV=str(venv), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def run(cmd, env, timeout=1800, cwd=None) -> str:
    result = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def record_bag(root: Path, episode_id: str, labels: list[int]) -> Path:
    """One episode bag written by apo_recorder's writer from the CDR bytes its node would receive."""
    from apo_recorder.synthetic import write_recorded_episode

    return write_recorded_episode(root, episode_id, labels, state_step=0.1)


def test_trainer_installs_converts_and_trains_without_ros(tmp_path):
    started = time.monotonic()
    # --- fixtures, made in the project venv (the recorder needs its own package, not ROS) -------------
    bags = tmp_path / "bags"
    for n in range(2):
        record_bag(bags, f"ep{n}", [1] * 12 + [2] * 6 + [1] * 6)
    start = tiny_policy(state_dim=9).save(tmp_path / "start")
    dataset, output = tmp_path / "data" / "interactive.h5", tmp_path / "run"
    config = tiny_train_config(output, [dataset], policy_path=start, loss="apo", max_steps=3, batch_size=4,
                               train={"tensorboard": False})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))

    # --- the venv: torch first (as scripts/setup.sh), then the two packages and what they declare -------
    venv = tmp_path / "venv"
    env = clean_env(venv)
    run([base_python(), "-m", "venv", venv], env)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip, torch_pin()], env)
    # --no-build-isolation: the venv's own setuptools builds the two packages (no index lookup for it)
    run([*pip, "--no-build-isolation", "-c", ROOT / "requirements" / "trainer.txt",
         ROOT / "src" / "apo_core", ROOT / "src" / "apo_trainer"], env)
    installed = json.loads(run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json"], env))
    names = {d["name"].lower().replace("_", "-") for d in installed}
    assert {"apo-core", "apo-trainer", "torch"} <= names, sorted(names)
    pulled = sorted(n for n in names if n.startswith("ros-") or n in {"apo-ros", "robosuite", "mujoco", "rclpy"})
    assert not pulled, f"the trainer's declared dependencies pulled ROS / simulator distributions: {pulled}"
    for module in ("rclpy", "robosuite", "apo_ros", "apo_sim"):
        probe = subprocess.run([venv / "bin" / "python", "-c", f"import {module}"], env=env, capture_output=True,
                               text=True, timeout=120)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, (module, probe.stderr[-500:])

    # --- convert the recorded bags, train a few steps -------------------------------------------------
    run([venv / "bin" / "apo-convert", bags, dataset, "--k", "3", "--settle-seconds", "0", "--no-progress",
         "--report-json", tmp_path / "convert.json"], env, cwd=tmp_path)
    report = json.loads((tmp_path / "convert.json").read_text())
    assert [b["status"] for b in report["bags"]] == ["added", "added"], report
    run([venv / "bin" / "apo-train", "--config", tmp_path / "train.yaml"], env, cwd=tmp_path)
    steps = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()
             if '"step"' in line]
    assert steps and max(steps) == 3, steps
    assert (output / "policy" / "apo_policy.json").is_file()
    # the wall time of this test, for the CI budget (shown with -s / -rA)
    print(f"trainer-without-ROS venv test: {time.monotonic() - started:.0f} s", file=sys.stderr)
