"""bench/failure_modes.py: the stages of a task, read from the real simulator's state while the scripted
expert solves it, and a policy's episodes summarised by the furthest stage they reached."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert

pytestmark = pytest.mark.sim

TOOL = Path(__file__).resolve().parents[1] / "bench" / "failure_modes.py"


def _tool():
    spec = importlib.util.spec_from_file_location("failure_modes", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _expert_stages(tool, task: str, seed: int, max_steps: int) -> list[str]:
    with SimEnv(task, render=False) as env:
        env.reset(seed=seed, render=False)
        expert = ScriptedExpert(task)
        expert.reset()
        stages = [tool.stage_of(env.task_state())]
        for _ in range(max_steps):
            state = env.task_state()
            if state.success:
                break
            env.step(expert.act(state), render=False)
            stages.append(tool.stage_of(env.task_state()))
    return stages


@pytest.mark.parametrize("task, expected", [
    ("Lift", ["none", "reached", "grasped", "lifted", "success"]),
    ("Stack", ["none", "reached", "grasped", "lifted", "over", "success"]),
])
def test_the_expert_passes_every_stage_in_order(task, expected):
    tool = _tool()
    stages = _expert_stages(tool, task, seed=0, max_steps=300)
    assert stages[-1] == "success" and tool.furthest(stages) == "success"
    firsts = [stages.index(s) for s in expected]  # each stage is reached, and after the one before it
    assert firsts == sorted(firsts), stages
    assert stages[0] == "none"


def test_summary_counts_a_success_as_success_and_failures_by_furthest_stage():
    tool = _tool()
    episodes = [{"success": True, "furthest": "success"}, {"success": False, "furthest": "lifted"},
                {"success": False, "furthest": "lifted"}, {"success": False, "furthest": "reached"}]
    counts = tool.summary(episodes)
    assert counts == {"none": 0, "reached": 1, "grasped": 0, "lifted": 2, "over": 0, "placed": 0, "success": 1}
    assert tool.furthest(["none", "grasped", "reached"]) == "grasped" and tool.furthest([]) == "none"


def test_a_policy_run_writes_its_record_and_plot(tmp_path, capsys):
    from apo_trainer.testing import tiny_policy

    tool = _tool()
    policy_dir = tiny_policy(image_size=32).save(tmp_path / "tiny")
    rc = tool.main([str(policy_dir), "--task", "Lift", "--episodes", "2", "--seed-base", "70000", "--max-steps", "3",
                    "--out", str(tmp_path / "out")])
    assert rc == 0
    record = json.loads((tmp_path / "out" / "Lift_tiny.json").read_text())
    assert [e["seed"] for e in record["episodes"]] == [70000, 70001]
    assert all(e["steps"] == 3 and not e["success"] and e["furthest"] in tool.STAGES for e in record["episodes"])
    assert sum(record["counts"].values()) == 2
    assert (tmp_path / "out" / "Lift_failure_modes.png").stat().st_size > 0
    assert "| tiny |" in capsys.readouterr().out
    assert tool.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_in_camera_view_projects_through_the_camera():
    tool = _tool()
    with SimEnv("Stack", camera="robot0_eye_in_hand", render=False) as env:
        env.reset(seed=0, render=False)
        data = env.raw.sim.data
        cam = env.raw.sim.model.camera_name2id(env.camera)
        pos, rot = data.cam_xpos[cam].copy(), data.cam_xmat[cam].reshape(3, 3).copy()
        ahead, behind = pos - 0.3 * rot[:, 2], pos + 0.3 * rot[:, 2]  # the camera looks along its -z
        aside = pos - 0.3 * rot[:, 2] + 2.0 * rot[:, 0]
        assert tool.in_camera_view(env, ahead)
        assert not tool.in_camera_view(env, behind) and not tool.in_camera_view(env, aside)


def test_the_expert_row_records_whether_the_goal_was_in_view_at_lift_off(tmp_path, capsys):
    tool = _tool()
    assert tool.main(["--task", "Stack", "--out", str(tmp_path)]) == 2  # neither policies nor --expert
    assert "--expert" in capsys.readouterr().err
    rc = tool.main(["--expert", "--task", "Stack", "--episodes", "1", "--seed-base", "70000", "--out", str(tmp_path)])
    assert rc == 0
    record = json.loads((tmp_path / "Stack_expert.json").read_text())
    episode = record["episodes"][0]
    assert episode["success"] and episode["furthest"] == "success"
    assert isinstance(episode["goal_in_view_at_lift"], bool)
    assert record["goal_in_view_at_lift"] in ("0 of 1 lifts", "1 of 1 lifts")
    assert "| expert |" in capsys.readouterr().out
