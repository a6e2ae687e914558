"""Bag -> HDF5 conversion on real bags written by rosbags in the recorder's layout."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from apo_core.dataset import Episode, append_episode, episode_ids, read_episode
from apo_core.labels import apply_k_window
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import (
    SampleEpisode,
    chunk_offsets,
    cut_file,
    frame_id,
    sample_action,
    write_sample_bag,
)
from apo_trainer.convert import ConvertOptions, convert_bag, convert_bags, main

# Takeovers at steps 30 and 52 (back-to-back intervention), human from the start in ep_c.
LABELS_A = [1] * 30 + [2] * 10 + [1] * 12 + [2] * 5 + [1] * 8
LABELS_B = [1] * 40
LABELS_C = [2] * 6 + [1] * 20 + [2] * 4


def episodes():
    return [
        SampleEpisode("ep_a", LABELS_A, image_every=2, late_frames=[2 * 20], skip_steps=[5, 6],
                      no_proposal_steps=[33, 34], instruction="stack the cubes", task="Stack"),
        SampleEpisode("ep_b", LABELS_B, outcome="failure", policy_version="v0002"),
        SampleEpisode("ep_c", LABELS_C, zero_stamps=True, outcome="abort"),
    ]


@pytest.fixture
def bags(tmp_path):
    root = tmp_path / "bags"
    for ep in episodes():
        write_sample_bag(root, ep)
    return root


def run(bags_dir, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("settle_seconds", 0)
    return convert_bags(bags_dir, out, **kw)


def groups(out):
    with h5py.File(out, "r") as f:
        return {str(f["data"][n].attrs["episode_id"]): n for n in f["data"]}


def test_each_bag_becomes_one_episode_of_the_schema(bags, tmp_path):
    out = tmp_path / "data" / "interactive.h5"
    report = run(bags, out)
    assert [b.status for b in report.bags] == ["added"] * 3 and not report.failed
    assert episode_ids(out) == ["ep_a", "ep_b", "ep_c"]
    assert report.steps_added == len(LABELS_A) - 2 + len(LABELS_B) + len(LABELS_C)
    names = groups(out)
    a = read_episode(out, names["ep_a"])
    assert (a.instruction, a.task, a.outcome, a.source, a.policy_version) == (
        "stack the cubes", "Stack", "success", "interactive", "v0001")
    assert a.origin == str((bags / "ep_a").resolve())
    expected_idx = [i for i in range(len(LABELS_A)) if i not in (5, 6)]
    np.testing.assert_array_equal(a.step_index, expected_idx)
    np.testing.assert_allclose(a.actions, np.stack([sample_action(i) for i in expected_idx]))
    np.testing.assert_array_equal(a.live_labels, [LABELS_A[i] for i in expected_idx])
    np.testing.assert_array_equal(a.modes, [1 if LABELS_A[i] == 2 else 0 for i in expected_idx])
    assert a.images.shape == (len(expected_idx), 48, 64, 3) and a.states.shape == (len(expected_idx), 9)
    # Proposals: NaN rows exactly where the step carried none.
    nan_rows = [int(i) for i, row in zip(a.step_index, a.policy_actions, strict=True) if np.isnan(row).all()]
    assert nan_rows == [33, 34]
    assert np.isfinite(np.delete(a.policy_actions, [expected_idx.index(33), expected_idx.index(34)], axis=0)).all()
    # Timestamps: the step's header stamp (t + 1 ms) in seconds.
    np.testing.assert_allclose(a.timestamps, 1_700_000_000 + 0.1 * np.asarray(expected_idx) + 0.001, atol=1e-6)
    b = read_episode(out, names["ep_b"])
    assert (b.outcome, b.policy_version) == ("failure", "v0002")
    assert read_episode(out, names["ep_c"]).outcome == "abort"
    assert not list(out.parent.glob("*.staging"))  # staging files cleaned up


def test_samples_take_the_newest_image_and_state_stamped_at_or_before_the_step(bags, tmp_path):
    out = tmp_path / "out.h5"
    run(bags, out)
    names = groups(out)
    a = read_episode(out, names["ep_a"])
    # Two frames per step; frame 40 (step 20) reached the recorder 150 ms after its step.
    assert [frame_id(img) for img in a.images] == [2 * int(i) for i in a.step_index]
    np.testing.assert_array_equal(a.states[:, 0], 2 * a.step_index)
    c = read_episode(out, names["ep_c"])  # header stamps all zero: aligned by log time
    assert [frame_id(img) for img in c.images] == list(c.step_index)
    np.testing.assert_array_equal(c.states[:, 0], 2 * c.step_index)
    np.testing.assert_allclose(c.timestamps, 1_700_000_000 + 0.1 * c.step_index + 0.0015, atol=1e-6)


def test_lateness_window_is_a_parameter(bags, tmp_path):
    out = tmp_path / "out.h5"
    run(bags, out, max_lateness=0.0)
    a = read_episode(out, groups(out)["ep_a"])
    ids = {int(i): frame_id(img) for i, img in zip(a.step_index, a.images, strict=True)}
    assert ids[20] == 39  # the late frame 40 is not waited for: the previous frame is used
    assert all(ids[i] == 2 * i for i in ids if i != 20)


@pytest.mark.parametrize("k", [10, 3, 0])
def test_labels_apply_the_k_window(bags, tmp_path, k):
    out = tmp_path / f"k{k}.h5"
    report = run(bags, out, k=k)
    for name in groups(out).values():
        ep = read_episode(out, name)
        with h5py.File(out, "r") as f:
            labels = f["data"][name]["labels"][()]
            assert f["data"][name].attrs["k_window"] == k
        np.testing.assert_array_equal(labels, apply_k_window(ep.live_labels, k))
    a = read_episode(out, groups(out)["ep_a"])
    with h5py.File(out, "r") as f:
        labels = f["data"][groups(out)["ep_a"]]["labels"][()]
    by_step = dict(zip(a.step_index.tolist(), labels.tolist(), strict=True))
    assert [by_step[i] for i in range(30 - k, 30)] == [0] * k and by_step[29 - k] == 1
    assert [by_step[i] for i in range(52 - k, 52)] == [0] * k and by_step[51 - k] == 1
    # ep_a: 2 takeovers after autonomous stretches; ep_c: one at step 0 (no window) and one at step 26.
    hist = report.label_histogram
    assert hist["UNDESIRABLE"] == 3 * k and sum(hist.values()) == report.steps_added


def test_rerun_adds_only_new_episodes(bags, tmp_path):
    out = tmp_path / "out.h5"
    run(bags, out)
    with h5py.File(out, "r") as f:
        before = {n: f["data"][n]["actions"][()] for n in f["data"]}
    again = run(bags, out)
    assert [b.status for b in again.bags] == ["skipped"] * 3 and again.steps_added == 0
    write_sample_bag(bags, SampleEpisode("ep_d", [1] * 12 + [2] * 3))
    third = run(bags, out)
    assert [(b.episode_id, b.status) for b in third.bags] == [
        ("ep_a", "skipped"), ("ep_b", "skipped"), ("ep_c", "skipped"), ("ep_d", "added")]
    assert episode_ids(out) == ["ep_a", "ep_b", "ep_c", "ep_d"]
    with h5py.File(out, "r") as f:
        for n, acts in before.items():
            np.testing.assert_array_equal(f["data"][n]["actions"][()], acts)
        assert f["data"].attrs["total"] == sum(len(f["data"][n]["actions"]) for n in f["data"])


def test_missing_steps_are_reported(bags, tmp_path):
    out = tmp_path / "out.h5"
    report = run(bags, out)
    a = next(b for b in report.bags if b.episode_id == "ep_a")
    assert a.missing_steps == [[5, 6]]
    assert "missing step indices: 5-6" in report.summary()
    with h5py.File(out, "r") as f:
        assert f["data"][groups(out)["ep_a"]].attrs["missing_steps"] == 2


def test_truncated_bag_without_metadata_is_recovered_as_far_as_it_reads(bags, tmp_path):
    long_ep = SampleEpisode("ep_long", [1] * 150 + [2] * 30 + [1] * 70, image_size=(64, 64),
                            instruction="open the drawer")
    path = write_sample_bag(bags, long_ep)
    (path / "metadata.yaml").unlink()
    mcap = path / "ep_long.mcap"
    last = chunk_offsets(mcap)[-1]
    cut_file(mcap, last[0] + last[1] // 2)  # the recorder died while writing the last chunk
    out = tmp_path / "out.h5"
    report = run(bags, out)
    result = next(b for b in report.bags if b.bag.endswith("ep_long"))
    assert result.status == "recovered" and result.episode_id == "ep_long"
    assert 100 < result.steps < 250
    assert result.read["chunks_torn"] == 1 and not result.read["metadata_present"]
    assert [b.status for b in report.bags if b is not result] == ["added"] * 3
    ep = read_episode(out, groups(out)["ep_long"])
    assert ep.instruction == "open the drawer" and ep.task == "Lift"  # from the START event
    assert ep.outcome == "unknown"  # the outcome event was in the lost part
    np.testing.assert_array_equal(ep.step_index, np.arange(len(ep)))
    assert [frame_id(img) for img in ep.images] == list(ep.step_index)
    with h5py.File(out, "r") as f:
        assert f["data"][groups(out)["ep_long"]].attrs["bag_read_mode"] == "recovered"
    assert "recovered" in report.summary() and "torn" in report.summary()


def test_killed_recorder_journal_gives_episode_info_and_a_live_one_is_left_alone(bags, tmp_path):
    path = write_sample_bag(bags, SampleEpisode("ep_killed", [1] * 300, image_size=(64, 64)), finish=False)
    journal = {"apo_recording_journal": 1, "pid": 2**22 + 12345, "hostname": os.uname().nodename,
               "custom_data": {"apo.episode_id": "ep_killed", "apo.instruction": "from the journal",
                               "apo.outcome": "unknown", "apo.policy_version": "v0009"}}
    (path / "apo_recording.yaml").write_text(yaml.safe_dump(journal))
    out = tmp_path / "out.h5"
    report = run(bags, out, settle_seconds=3600)  # the journal's pid is gone: no need to wait
    result = next(b for b in report.bags if b.bag.endswith("ep_killed"))
    assert result.status == "recovered", result.line()
    ep = read_episode(out, groups(out)["ep_killed"])
    assert (ep.instruction, ep.policy_version) == ("from the journal", "v0009")
    # The same bag while its recorder still runs (our own pid) is skipped, not half-converted.
    live = bags / "ep_live"
    shutil.copytree(path, live)
    journal["pid"], journal["custom_data"]["apo.episode_id"] = os.getpid(), "ep_live"
    (live / "apo_recording.yaml").write_text(yaml.safe_dump(journal))
    report = run(bags, out)
    result = next(b for b in report.bags if b.bag.endswith("ep_live"))
    assert result.status == "skipped" and "being recorded" in result.error
    assert "ep_live" not in episode_ids(out)


def test_garbage_bag_is_reported_and_the_others_convert(bags, tmp_path, capsys):
    bad = bags / "ep_garbage"
    bad.mkdir()
    (bad / "ep_garbage.mcap").write_bytes(np.random.default_rng(1).integers(0, 256, 300_000, np.uint8).tobytes())
    os.utime(bad / "ep_garbage.mcap", (1, 1))  # old enough not to look like a recording in progress
    empty = bags / "ep_empty"
    write_sample_bag(bags, SampleEpisode("ep_empty", [1] * 3, image_size=(8, 8)), finish=False)
    os.utime(empty / "ep_empty.mcap", (1, 1))
    out = tmp_path / "out.h5"
    rc = main([str(bags), str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1  # some bags failed; the rest were converted
    assert episode_ids(out) == ["ep_a", "ep_b", "ep_c"]
    assert "failed    ep_garbage" in text and "not an MCAP file" in text
    assert "failed    ep_empty" in text and "no usable steps" in text
    assert "3 added" in text and "2 failed" in text


def test_mismatched_action_dimension_fails_that_bag_only(bags, tmp_path):
    write_sample_bag(bags, SampleEpisode("ep_z6d", [1] * 10, action_dim=6))
    out = tmp_path / "out.h5"
    report = run(bags, out)
    bad = next(b for b in report.bags if b.bag.endswith("ep_z6d"))
    assert bad.status == "failed"
    assert "6-D" in bad.error and "7-D" in bad.error and "ep_z6d" in bad.error
    assert episode_ids(out) == ["ep_a", "ep_b", "ep_c"]
    # Against an existing dataset: the first bag of the run fixes nothing, the file does.
    only = tmp_path / "only6"
    shutil.copytree(bags / "ep_z6d", only / "ep_z6d")
    again = run(only, out)
    assert again.bags[0].status == "failed" and "the dataset" in again.bags[0].error


def expert_file(path, n=2, constant_dim=None, offset=0.3):
    for e in range(n):
        t = 20
        actions = np.stack([sample_action(i, 7, offset=offset) for i in range(t)]) * 2.0
        if constant_dim is not None:
            actions[:, constant_dim] = 0.25
        append_episode(path, Episode(
            episode_id=f"expert_{e}", instruction="lift the red cube", task="Lift", outcome="success",
            images=np.zeros((t, 48, 64, 3), np.uint8), actions=actions, live_labels=np.ones(t, np.uint8),
            states=np.zeros((t, 9)), source="expert" if e else "interactive"))
    return path


def test_expert_demos_are_merged_and_action_stats_cover_both_sources(bags, tmp_path):
    expert = expert_file(tmp_path / "expert.h5")
    out = tmp_path / "data" / "train.h5"
    report = run(bags, out, expert_demos=expert)
    assert report.expert.added == 2 and report.expert.source_changed == 1
    assert episode_ids(out) == ["expert_0", "expert_1", "ep_a", "ep_b", "ep_c"]
    with h5py.File(out, "r") as f:
        sources = [f["data"][n].attrs["source"] for n in sorted(f["data"], key=lambda n: (len(n), n))]
        all_actions = np.concatenate([f["data"][n]["actions"][()] for n in f["data"]])
    assert sources == ["expert", "expert", "interactive", "interactive", "interactive"]
    stats_path = out.parent / "action_stats.json"
    assert report.stats_path == str(stats_path)
    stats = ActionStats.load(stats_path)
    ref = ActionStats.from_actions(all_actions)
    np.testing.assert_allclose(stats.q01, ref.q01)
    np.testing.assert_allclose(stats.q99, ref.q99)
    assert stats.mask.tolist() == [True] * 6 + [False]  # gripper unnormalised
    extra = json.loads(stats_path.read_text())["extra"]
    assert extra["samples_by_source"] == {"expert": 40, "interactive": report.steps_added}
    assert not report.zero_range_dims
    again = run(bags, out, expert_demos=expert)
    assert again.expert.added == 0 and again.expert.skipped == 2 and len(episode_ids(out)) == 5


def test_zero_range_action_dimensions_are_reported_and_can_be_unmasked(tmp_path):
    empty = tmp_path / "no_bags"
    empty.mkdir()
    expert = expert_file(tmp_path / "expert.h5", constant_dim=2)
    out = tmp_path / "out.h5"
    report = run(empty, out, expert_demos=expert)
    assert report.zero_range_dims == [2]
    assert "dimension(s) [2] never vary" in report.summary()
    assert ActionStats.load(tmp_path / "action_stats.json").mask.tolist() == [True] * 6 + [False]
    report = run(empty, tmp_path / "out.h5", expert_demos=expert, unmask_zero_range=True)
    stats = ActionStats.load(tmp_path / "action_stats.json")
    assert stats.mask.tolist() == [True, True, False, True, True, True, False]
    stats.normalise(np.zeros((1, 7)))  # usable now


def test_relabel_reapplies_a_new_k_to_stored_episodes(bags, tmp_path):
    out = tmp_path / "out.h5"
    run(bags, out, k=10)
    report = run(bags, out, k=2, relabel=True)
    assert report.relabelled == 3
    for name in groups(out).values():
        ep = read_episode(out, name)
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["data"][name]["labels"][()], apply_k_window(ep.live_labels, 2))


def test_single_bag_api_and_options_validation(bags, tmp_path):
    out = tmp_path / "out.h5"
    result = convert_bag(bags / "ep_b", out, ConvertOptions(progress=False))
    assert result.status == "added" and result.steps == 40 and result.labels["AUTONOMOUS"] == 40
    with pytest.raises(ValueError, match="K-window"):
        ConvertOptions(k=-1)


def test_cli_module_entry_point_writes_a_json_report(bags, tmp_path):
    out = tmp_path / "out.h5"
    report_json = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "apo_trainer.convert", str(bags), str(out), "--k", "4",
                           "--report-json", str(report_json)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 added" in proc.stdout
    data = json.loads(report_json.read_text())
    assert data["k"] == 4 and [b["status"] for b in data["bags"]] == ["added"] * 3
    assert data["label_histogram"]["UNDESIRABLE"] == 3 * 4


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out.h5")]) == 2
    assert "bags directory not found" in capsys.readouterr().err
    (tmp_path / "bags").mkdir()
    assert main([str(tmp_path / "bags"), str(tmp_path / "out.h5"), "--k", "-2"]) == 2
    assert "non-negative" in capsys.readouterr().err
