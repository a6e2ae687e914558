"""The main job end to end on tiny settings: demos -> BC -> deploy graph -> /apo/retrain -> new version
deployed -> evaluation -> report. The same code path as `bash scripts/run.sh`, only smaller."""

import json

import pytest

from apo_cli.demo import DemoSettings, run_demo

pytestmark = [pytest.mark.ros, pytest.mark.sim, pytest.mark.slow]


def test_tiny_demo_runs_the_whole_loop(tmp_path):
    settings = DemoSettings(out=str(tmp_path / "demo"), demo_episodes=2, bc_steps=10, bc_batch=8, round_episodes=1,
                            max_episode_steps=15, retrain_steps=2, eval_episodes=1, image_size=48)
    code = run_demo(settings)
    out = tmp_path / "demo"
    summary = json.loads((out / "report" / "demo.json").read_text())
    assert code == 0, summary.get("failure")
    assert summary["base_version"] == "v0001" and summary["new_version"] == "v0002"
    assert len(summary["round1"]) == 1 and len(summary["round2"]) == 1
    assert set(summary["evaluation"]) == {"v0001", "v0002"}
    for phase in ("demos", "base BC", "graph start", "retrain", "evaluation", "report"):
        assert phase in summary["phases"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["policy_version"] for r in report["rounds"]] == ["v0001", "v0002"]
    assert all(p.endswith(".png") for p in report["plots"])
    assert "## Demo run" in (out / "report" / "report.md").read_text()
