"""``apo deploy`` as a user runs it (a subprocess of ``python -m apo_cli.cli``): a bad node configuration is
refused naming the key, and SIGINT stops the whole graph cleanly. Real simulator, random-init policy, real DDS."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from apo_bringup.graph import default_graph_path
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.testing import tiny_policy

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]


def _store(tmp_path):
    q = np.full(7, 1.0)
    ModelStore(tmp_path / "models").add(
        tiny_policy(ActionStats(q01=-q, q99=q, mask=[True] * 6 + [False]), state_dim=9, seed=3).save(tmp_path / "p"))


def _args(tmp_path, **extra):
    """The deploy graph's arguments for a policy-only run (no operator, no recording, no retraining)."""
    return {"robot": "sim", "task": "Lift", "model_path": str(tmp_path / "models"), "bags_dir": str(tmp_path / "bags"),
            "record": False, "operator": "none", "operator_autostart": False, "image_size": 48, "max_episode_steps": 40, "retrain": False, **extra}


def test_malformed_node_config_fails_at_load_or_start_naming_the_key(tmp_path):
    _store(tmp_path)
    bad = tmp_path / "deploy.yaml"
    text = default_graph_path().read_text().replace('      max_episode_steps: "${max_episode_steps}"',
                                                     '      max_episode_stpes: "${max_episode_steps}"')
    assert "max_episode_stpes" in text
    bad.write_text(text)
    args = [f"{k}:={v}" for k, v in _args(tmp_path).items()]
    # A parameter name outside the node's schema: refused when the graph file is loaded, nothing starts.
    proc = subprocess.run([sys.executable, "-m", "apo_cli.cli", "deploy", "--graph", str(bad), *args,
                           "--duration", "120", "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "node 'apo_arbiter'" in proc.stderr and "unknown parameter 'max_episode_stpes'" in proc.stderr
    assert "started" not in proc.stdout and not (tmp_path / "logs").exists()
    # A value only the node can judge: the node exits 2 at start naming the key, and the graph stops.
    args = [a for a in args if not a.startswith("max_episode_steps:=")] + ["max_episode_steps:=-5"]
    proc = subprocess.run([sys.executable, "-m", "apo_cli.cli", "deploy", *args,
                           "--duration", "120", "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "apo_arbiter exited with code 2" in proc.stdout
    assert "max_episode_steps: must be >= 0" in (tmp_path / "logs" / "apo_arbiter.log").read_text()


def test_apo_deploy_stops_cleanly_on_sigint(tmp_path):
    _store(tmp_path)
    args = [f"{k}:={v}" for k, v in _args(tmp_path).items()]
    proc = subprocess.Popen([sys.executable, "-m", "apo_cli.cli", "deploy", *args,
                             "--log-dir", str(tmp_path / "logs")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=os.environ)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "ready" in line and "[apo_policy]" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-3000:]
    assert "signal received" in text and "exit codes" in text
