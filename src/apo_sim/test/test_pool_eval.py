"""The pooled evaluator equals the sequential one; its worker processes fail loudly and never linger."""

import os
import signal
from pathlib import Path

import pytest

from apo_core.policy.small_vla import SmallVLAPolicy
from apo_sim.env_pool import EnvPool, PoolWorkerDied, PoolWorkerError
from apo_sim.pool_eval import PoolEvaluator, evaluate_pooled
from apo_sim.rollout import evaluate_policy

pytestmark = pytest.mark.sim

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})
NO_RENDER = {"render": False}


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_pooled_equals_sequential(tmp_path, capfd):
    policy = SmallVLAPolicy.create(state_dim=9, seed=3, **TINY)
    policy.save(tmp_path / "p")
    seeds = [11, 4, 7, 12, 5]  # more seeds than simulators: a free simulator takes the next seed
    sequential = evaluate_policy(tmp_path / "p", "Lift", seeds=seeds, max_steps=10)
    pooled = evaluate_pooled(tmp_path / "p", "Lift", seeds=seeds, max_steps=10, envs=3, processes=2, progress=True)
    assert [r.seed for r in pooled.records] == seeds
    assert [r.to_dict() for r in pooled.records] == [r.to_dict() for r in sequential.records]
    assert (pooled.successes, pooled.steps, pooled.episodes) == (sequential.successes, sequential.steps, 5)
    err = capfd.readouterr().err
    assert "[eval-pool]" in err and "5/5 episodes" in err and "ETA" in err


def test_a_pool_reused_across_policies_still_equals_sequential():
    first = SmallVLAPolicy.create(state_dim=9, seed=3, **TINY)
    second = SmallVLAPolicy.create(seed=8, **TINY)  # another policy, without state input
    with PoolEvaluator("Lift", image_size=32, envs=2, processes=1) as ev:
        ev.evaluate(first, [4, 2, 9], max_steps=6)
        pooled = ev.evaluate(second, [9, 4], max_steps=8)
        with pytest.raises(ValueError, match="64 px images; this pool renders 32 px"):
            ev.evaluate(SmallVLAPolicy.create(**{**TINY, "image_size": 64}), [1], max_steps=2)
    sequential = evaluate_policy(second, "Lift", seeds=[9, 4], max_steps=8)
    assert [r.to_dict() for r in pooled.records] == [r.to_dict() for r in sequential.records]


def test_zero_step_episodes_and_no_seeds():
    policy = SmallVLAPolicy.create(seed=1, **TINY)
    r = evaluate_pooled(policy, "Lift", seeds=[2, 3, 4], max_steps=0, envs=1, env_kwargs=NO_RENDER)
    assert [(x.seed, x.steps, x.success) for x in r.records] == [(2, 0, False), (3, 0, False), (4, 0, False)]
    assert evaluate_pooled(policy, "Lift", seeds=[], max_steps=5).episodes == 0


def test_worker_errors_are_reported_and_a_dead_worker_is_named():
    with EnvPool(1, "Lift", NO_RENDER) as pool:
        with pytest.raises(PoolWorkerError, match="simulator 0 .process 0. failed on 'step'"):
            pool.exchange({0: pool.step_command([0.0] * 7)})  # no episode started
        reply = pool.exchange({0: pool.start_command(3, 2)})[0]  # the worker survived its error
        assert not reply.done and reply.proprio.shape == (9,)
        with pytest.raises(PoolWorkerError, match="NaN or inf"):
            pool.exchange({0: pool.step_command([float("nan")] * 7)})
        pid = pool.pids[0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(PoolWorkerDied, match=f"pid {pid}, simulators .0.. died .* exit code -9"):
            pool.exchange({0: pool.step_command([0.0] * 7)})
    assert _gone(pid)


def test_a_worker_that_cannot_start_fails_the_evaluation():
    policy = SmallVLAPolicy.create(seed=1, **TINY)
    with pytest.raises(PoolWorkerError, match="unknown camera 'nope'"):
        evaluate_pooled(policy, "Lift", seeds=[1, 2], max_steps=3, envs=1, env_kwargs={"camera": "nope"})


def test_workers_are_stopped_when_the_parent_is_interrupted():
    with pytest.raises(KeyboardInterrupt):
        with EnvPool(2, "Lift", NO_RENDER) as pool:
            pids = pool.pids
            pool.exchange({0: pool.start_command(1, 5), 1: pool.start_command(2, 5)})
            raise KeyboardInterrupt
    assert all(_gone(p) for p in pids)


class _KillsTheUnpickler:
    """Unpickled in a spawned worker, it kills that process with SIGKILL, the first ``times`` times only.

    A real process death before the worker's simulators exist, as a native crash in their start-up
    would be; the count lives in a file, so the worker that is started again survives.
    """

    def __init__(self, counter: Path, times: int):
        self.counter, self.times = counter, times

    def __reduce__(self):
        code = (f"import os, pathlib, signal\np = pathlib.Path({str(self.counter)!r})\n"
                f"n = int(p.read_text() or 0) if p.exists() else 0\np.write_text(str(n + 1))\n"
                f"if n < {self.times}:\n    os.kill(os.getpid(), signal.SIGKILL)\n")
        return exec, (code,)  # exec returns None: the worker then sees perturbation None


def test_a_worker_killed_while_it_starts_is_started_again(tmp_path, capfd):
    counter = tmp_path / "starts"
    with EnvPool(1, "Lift", {**NO_RENDER, "perturbation": _KillsTheUnpickler(counter, times=1)}) as pool:
        reply = pool.exchange({0: pool.start_command(3, 2)})[0]
        assert reply.proprio.shape == (9,)
    assert counter.read_text() == "2"
    assert "died during construction with exit code -9; starting it again (start 2 of 3)" in capfd.readouterr().err


def test_a_worker_killed_at_every_start_fails_after_three_starts(tmp_path):
    counter = tmp_path / "starts"
    with pytest.raises(PoolWorkerDied, match=r"exit code -9 \(start 3 of 3\)"):
        EnvPool(1, "Lift", {**NO_RENDER, "perturbation": _KillsTheUnpickler(counter, times=10)})
    assert counter.read_text() == "3"
