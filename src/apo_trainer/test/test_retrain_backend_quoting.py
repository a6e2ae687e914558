"""The command backend passes every placeholder as one literal shell word: a path is data, never code.

A real retrain job (real bags, conversion, APO training on a tiny policy, promotion) runs with a work_dir
whose name holds $(...), backticks, ';' and spaces; the command line reports the arguments it received,
then trains through the same placeholders.
"""

import json
import shlex
import sys

import numpy as np

from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.retrain.job import RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings
from apo_trainer.testing import tiny_policy

A, H = 1, 2
TRAIN = {"train": {"batch_size": 4, "checkpoint_every": 1000, "tensorboard": False, "torch_threads": 1},
         "reference": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8}}
# Prints its arguments as JSON (the job's train.log keeps it); in the test's own safe directory.
SHOW_ARGS = "import json, sys; print('ARGV ' + json.dumps(sys.argv[1:]))"


def test_command_backend_quotes_every_placeholder(tmp_path, monkeypatch):
    # the shell runs in `cwd`: an unquoted $(touch pwned) would create cwd/pwned
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    hostile = tmp_path / "runs $(touch pwned) `touch pwned2`; touch pwned3; echo"
    work_dir = hostile / "work"
    script = tmp_path / "show_args.py"
    script.write_text(SHOW_ARGS)
    actions = np.stack([sample_action(i) for i in range(100)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    for i in range(2):
        write_sample_bag(tmp_path / "bags", SampleEpisode(f"ep{i}", [A] * 12 + [H] * 6 + [A] * 6, image_size=(16, 16),
                                                         start_ns=(1_700_000_000 + 100 * i) * 10**9))
    command = (f"{{python}} {shlex.quote(str(script))} {{config}} {{output_dir}} {{job_id}} {{work_dir}} {{nproc}}"
               " && {python} -m apo_trainer.train --config {config}")
    m = RetrainManager(load_retrain_settings({
        "work_dir": str(work_dir), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
        "defaults": {"steps": 2}, "train_overrides": TRAIN, "eval": {"heldout_every": 0},
        "backend": {"kind": "command", "command": command}}))
    ok, job_id, reason = m.submit(RetrainRequest())
    assert ok, reason
    status = m.wait(300)
    log = (work_dir / "jobs" / job_id / "train.log").read_text()
    assert sorted(p.name for p in cwd.iterdir()) == [], "the shell ran code from the work_dir path"
    assert not list(tmp_path.glob("pwned*"))
    argv = json.loads(next(line for line in log.splitlines() if line.startswith("ARGV "))[5:])
    job_dir = work_dir / "jobs" / job_id
    assert argv == [str(job_dir / "train_config.yaml"), str(job_dir / "train"), job_id, str(work_dir), "1"]
    # the trainer got the same literal paths: the job trained and promoted
    assert status.state == "succeeded", status.message + "\n" + log
    assert store.current_version() == "v0002"


def test_command_backend_python_path_with_a_space_is_one_word(tmp_path, monkeypatch):
    # {python} is quoted too: an interpreter under a directory with a space and a ';' still runs as itself
    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "py env; touch pwned"
    odd.mkdir()
    wrapper = odd / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(state_dim=9).save(tmp_path / "base"))
    write_sample_bag(tmp_path / "bags", SampleEpisode("ep0", [A] * 8 + [H] * 4, image_size=(16, 16)))
    command = "{python} -c 'import sys; print(\"PY\", sys.argv)' {job_id}; exit 5"
    m = RetrainManager(load_retrain_settings({
        "work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
        "eval": {"heldout_every": 0}, "backend": {"kind": "command", "command": command}}))
    ok, job_id, reason = m.submit(RetrainRequest())
    assert ok, reason
    status = m.wait(300)
    log = (tmp_path / "work" / "jobs" / job_id / "train.log").read_text()
    assert status.state == "failed" and "code 5" in status.message, status.message  # its own exit, after it ran
    assert f"PY ['-c', '{job_id}']" in log, log
    assert not (tmp_path / "pwned").exists()
