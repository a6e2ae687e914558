"""The whole deploy graph from config/deploy.yaml as separate processes (apo deploy's runner): the real
simulator, a random-init policy, the scripted operator through the joystick path, the arbiter and the
recorder, over real DDS. Checks what the recorded bags say happened."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from apo_bringup.runner import GraphRunner
from apo_bringup.session import DeploySession
from apo_core import topics
from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_recorder.reader import iter_messages, list_episode_bags, read_bag_info
from apo_trainer.testing import tiny_policy

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]
SOURCE_TELEOP, SOURCE_HOLD = 1, 3
MODE_HUMAN = 1


def _store(tmp_path):
    q = np.full(7, 1.0)
    store = ModelStore(tmp_path / "models")
    # wide statistics: the random policy moves a lot, so the operator has something to correct
    store.add(tiny_policy(ActionStats(q01=-q, q99=q, mask=[True] * 6 + [False]), state_dim=9, seed=3)
              .save(tmp_path / "p"))
    return store


def _args(tmp_path, **extra):
    return {"robot": "sim", "task": "Lift", "model_path": str(tmp_path / "models"), "bags_dir": str(tmp_path / "bags"),
            "record": True, "operator": "scripted", "operator_autostart": False, "image_size": 48,
            "max_episode_steps": 40, "retrain": False, **extra}


def test_episodes_are_recorded_and_labelled(tmp_path):
    _store(tmp_path)
    specs = resolve_graph(load_graph_file(default_graph_path()), _args(tmp_path))
    assert {s.name for s in specs} == {"apo_sim", "apo_policy", "apo_arbiter", "apo_scripted_operator",
                                       "apo_joy_teleop", "apo_recorder"}
    runner = GraphRunner(specs, log_dir=tmp_path / "logs", echo=False)
    runner.start()
    session = None
    try:
        session = DeploySession(tmp_path / "bags")
        session.wait_ready(timeout=180)
        results = [session.run_episode("lift the red cube", timeout=120) for _ in range(3)]
    finally:
        if session is not None:
            session.close()
        codes = runner.stop()
    assert runner.poll() is None, f"a required node died: {runner.failed}"
    assert all(code in (0, -2, 130) for code in codes.values()), codes

    bags = list_episode_bags(tmp_path / "bags")
    assert sorted(b.name for b in bags) == sorted(r.episode_id for r in results)
    human_total = 0
    for r in results:
        info = read_bag_info(r.bag)
        assert info.episode_id == r.episode_id and info.outcome == r.outcome
        assert info.instruction == "lift the red cube" and info.policy_version == "v0001"
        steps = [m.msg for m in iter_messages(r.bag, [topics.STEP])]
        commands = {(m.msg.header.stamp.sec, m.msg.header.stamp.nanosec): m.msg
                    for m in iter_messages(r.bag, [topics.COMMAND])}
        # no step lost: contiguous indices from 0
        assert [s.step_index for s in steps] == list(range(len(steps))) and len(steps) > 0
        for s in steps:
            cmd = commands.get((s.header.stamp.sec, s.header.stamp.nanosec))
            assert cmd is not None, f"no command for step {s.step_index}"
            assert np.allclose(cmd.action, s.executed_action)
            # label 2 exactly on the steps the operator (teleop input) drove, 1 elsewhere
            assert (s.label == 2) == (cmd.source == SOURCE_TELEOP) == (s.mode == MODE_HUMAN)
            assert s.label in (1, 2) and np.all(np.isfinite(s.executed_action))
            assert np.all(np.abs(s.executed_action) <= 1.0)
        human_total += sum(s.label == 2 for s in steps)
        # the operator acted through the joystick path: its Joy messages are in the bag
        if any(s.label == 2 for s in steps):
            assert any(True for _ in iter_messages(r.bag, [topics.JOY]))
    # a random policy gets corrected
    assert human_total > 0


def test_malformed_node_config_fails_at_load_or_start_naming_the_key(tmp_path):
    _store(tmp_path)
    bad = tmp_path / "deploy.yaml"
    text = default_graph_path().read_text().replace('      max_episode_steps: "${max_episode_steps}"',
                                                     '      max_episode_stpes: "${max_episode_steps}"')
    assert "max_episode_stpes" in text
    bad.write_text(text)
    args = [f"{k}:={v}" for k, v in _args(tmp_path, operator="none", record=False).items()]
    # A parameter name outside the node's schema: refused when the graph file is loaded, nothing starts.
    proc = subprocess.run([sys.executable, "-m", "apo_bringup.cli", "deploy", "--graph", str(bad), *args,
                           "--duration", "120", "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "node 'apo_arbiter'" in proc.stderr and "unknown parameter 'max_episode_stpes'" in proc.stderr
    assert "started" not in proc.stdout and not (tmp_path / "logs").exists()
    # A value only the node can judge: the node exits 2 at start naming the key, and the graph stops.
    args = [a for a in args if not a.startswith("max_episode_steps:=")] + ["max_episode_steps:=-5"]
    proc = subprocess.run([sys.executable, "-m", "apo_bringup.cli", "deploy", *args,
                           "--duration", "120", "--log-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "apo_arbiter exited with code 2" in proc.stdout
    assert "max_episode_steps: must be >= 0" in (tmp_path / "logs" / "apo_arbiter.log").read_text()


def test_apo_deploy_stops_cleanly_on_sigint(tmp_path):
    _store(tmp_path)
    args = [f"{k}:={v}" for k, v in _args(tmp_path, operator="none", record=False).items()]
    proc = subprocess.Popen([sys.executable, "-m", "apo_bringup.cli", "deploy", *args,
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
