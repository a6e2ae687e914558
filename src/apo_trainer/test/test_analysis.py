"""Session report over real bag files: rounds, rates, label histogram, plots, damaged bags."""

import json

import pytest

from apo_trainer.analysis import main as report_main
from apo_trainer.analysis import summarise_bag, write_report
from apo_trainer.bag_reader_samples import SampleEpisode, cut_file, write_sample_bag


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    bags = tmp_path_factory.mktemp("bags")
    A, H = 1, 2
    # round v0001: two episodes, one success with a takeover, one failure driven mostly by the human
    write_sample_bag(bags, SampleEpisode("ep-a", [A] * 12 + [H] * 4 + [A] * 4, policy_version="v0001",
                                         outcome="success", image_size=(8, 8)))
    write_sample_bag(bags, SampleEpisode("ep-b", [A] * 3 + [H] * 12 + [A, A, H, H, A], policy_version="v0001",
                                         outcome="failure", image_size=(8, 8), start_ns=1_700_000_100 * 10**9))
    # round v0002: fewer interventions
    write_sample_bag(bags, SampleEpisode("ep-c", [A] * 20, policy_version="v0002", outcome="success",
                                         image_size=(8, 8), start_ns=1_700_000_200 * 10**9))
    write_sample_bag(bags, SampleEpisode("ep-d", [A] * 16 + [H] * 2 + [A] * 2, policy_version="v0002",
                                         outcome="success", image_size=(8, 8), start_ns=1_700_000_300 * 10**9))
    return bags


def test_summary_of_one_bag(session):
    s = summarise_bag(session / "ep-b")
    assert s.steps == 20 and s.human_steps == 14 and s.takeovers == 2
    assert s.policy_version == "v0001" and s.outcome == "failure" and s.actions.shape == (20, 7)


def test_report_rounds_and_plots(session, tmp_path):
    report = write_report([session], tmp_path / "out", k=3, traces=2, progress=False)
    r1, r2 = report["rounds"]
    assert (r1["policy_version"], r2["policy_version"]) == ("v0001", "v0002")
    assert r1["episodes"] == 2 and r1["success_rate"] == 0.5 and r2["success_rate"] == 1.0
    assert r1["human_steps"] == 18 and r1["steps"] == 40 and r1["intervention_rate"] == pytest.approx(18 / 40)
    assert r2["intervention_rate"] == pytest.approx(2 / 40) and r2["takeovers_per_episode"] == 0.5
    # K = 3: ep-a has 3 undesirable steps, ep-b 3 + 2 (the second window stops at human steps)
    assert r1["labels"] == {"UNDESIRABLE": 3 + 3 + 2, "AUTONOMOUS": 22 - 8, "HUMAN": 18}
    for p in report["plots"]:
        data = open(p, "rb").read(8)
        assert data.startswith(b"\x89PNG")
    assert len(report["plots"]) == 4
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 0 | v0001 | 2 | 50.0 % | 45.0 % |" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["k_window"] == 3


def test_damaged_and_garbage_bags(session, tmp_path):
    import shutil

    bags = tmp_path / "bags"
    shutil.copytree(session, bags)
    # a killed recording (no metadata, cut file) is read as far as it goes; garbage is listed as skipped
    mcap = next((bags / "ep-d").glob("*.mcap"))
    (bags / "ep-d" / "metadata.yaml").unlink()
    cut_file(mcap, mcap.stat().st_size // 2)
    (bags / "junk").mkdir()
    (bags / "junk" / "junk.mcap").write_bytes(b"not an mcap file at all" * 10)
    report = write_report([bags], tmp_path / "out", k=3, traces=1, progress=False)
    ids = {e["episode_id"] for e in report["episodes"]}
    assert {"ep-a", "ep-b", "ep-c"} <= ids
    d = [e for e in report["episodes"] if e["episode_id"] == "ep-d"]
    assert (d and d[0]["steps"] < 20) or any("ep-d" in s for s in report["skipped_bags"])
    assert any("junk" in s for s in report["skipped_bags"]) or "junk" in ids


def test_cli_errors_on_empty_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no readable episode bags" in capsys.readouterr().err
