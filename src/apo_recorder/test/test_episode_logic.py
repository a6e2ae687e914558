"""The recorder's episode state machine and the CDR episode-id peek, without ROS."""

from __future__ import annotations

import pytest

from apo_recorder import contract
from apo_recorder.cdr_peek import peek_header_then_string
from apo_recorder.episode import EpisodeTracker
from apo_recorder.synthetic import SyntheticMessages

START, END, SUCCESS, FAILURE, ABORT = (contract.EVENT_START, contract.EVENT_END, contract.EVENT_SUCCESS,
                                       contract.EVENT_FAILURE, contract.EVENT_ABORT)
T0 = 1_000_000_000_000


def kinds(decisions):
    return [(d.kind, d.episode.episode_id if d.episode else None, d.outcome) for d in decisions]


def test_start_end_grace_close():
    tr = EpisodeTracker(T0)
    d = tr.on_event("a", START, "pick", "Lift", "v1", stamp_ns=T0 + 1)
    assert kinds(d) == [("open", "a", "unknown")]
    assert d[0].episode.instruction == "pick" and not d[0].episode.joined_late
    assert tr.on_event("a", START, stamp_ns=T0 + 2)[0].kind == "ignore"  # duplicate
    assert kinds(tr.on_event("a", SUCCESS, stamp_ns=T0 + 3)) == [("end", "a", "success")]
    assert tr.current is None and tr.ending["a"][1] == "success"
    assert tr.on_event("a", FAILURE, stamp_ns=T0 + 4)[0].kind == "ignore"  # a known outcome is kept
    assert tr.on_event("a", START, stamp_ns=T0 + 4)[0].kind == "ignore"  # in its grace period
    assert kinds([tr.grace_expired("a")]) == [("close", "a", "success")]
    assert tr.grace_expired("a") is None and not tr.ending
    assert tr.on_event("a", START, stamp_ns=T0 + 5)[0].kind == "ignore"  # already recorded
    assert tr.finished("a")


@pytest.mark.parametrize("event,outcome", [(END, "unknown"), (SUCCESS, "success"), (FAILURE, "failure"),
                                           (ABORT, "abort")])
def test_outcome_of_each_end_event(event, outcome):
    tr = EpisodeTracker(T0)
    tr.on_event("a", START, stamp_ns=T0 + 1)
    assert kinds(tr.on_event("a", event, stamp_ns=T0 + 2)) == [("end", "a", outcome)]
    assert tr.grace_expired("a").outcome == outcome


def test_end_then_more_specific_outcome_during_grace():
    tr = EpisodeTracker(T0)
    tr.on_event("a", START, stamp_ns=T0 + 1)
    tr.on_event("a", END, stamp_ns=T0 + 2)
    assert kinds(tr.on_event("a", SUCCESS, stamp_ns=T0 + 3)) == [("end", "a", "success")]
    assert tr.grace_expired("a").outcome == "success"


def test_next_start_overlaps_the_grace_period_of_the_previous_episodes():
    tr = EpisodeTracker(T0)
    tr.on_event("a", START, stamp_ns=T0 + 1)
    # a START without an end event: a gets its grace period too, outcome unknown
    assert kinds(tr.on_event("b", START, stamp_ns=T0 + 2)) == [("end", "a", "unknown"), ("open", "b", "unknown")]
    tr.on_event("b", FAILURE, stamp_ns=T0 + 3)
    assert kinds(tr.on_event("c", START, stamp_ns=T0 + 4)) == [("open", "c", "unknown")]
    assert set(tr.ending) == {"a", "b"} and tr.current.episode_id == "c"
    assert kinds([tr.grace_expired("b"), tr.grace_expired("a")]) == [("close", "b", "failure"),
                                                                      ("close", "a", "unknown")]
    assert tr.finished("a") and tr.finished("b") and not tr.finished("c")
    assert kinds(tr.close_all()) == [("close", "c", "unknown")]


def test_end_of_another_episode_is_ignored():
    tr = EpisodeTracker(T0)
    tr.on_event("a", START, stamp_ns=T0 + 1)
    assert tr.on_event("zzz", SUCCESS, stamp_ns=T0 + 2)[0].kind == "ignore"
    assert tr.current.episode_id == "a" and not tr.ending


def test_latched_history_of_a_late_recorder():
    tr = EpisodeTracker(T0)
    # history: an episode that started and ended before the recorder -> opened, then discarded
    assert kinds(tr.on_event("old", START, stamp_ns=T0 - 10)) == [("open", "old", "unknown")]
    assert tr.current.joined_late
    assert kinds(tr.on_event("old", SUCCESS, stamp_ns=T0 - 5)) == [("discard", "old", "success")]
    assert tr.current is None and not tr.ending and tr.finished("old")
    # history: an episode still running when the recorder started -> joined, recorded to its live end
    tr.on_event("running", START, stamp_ns=T0 - 3)
    assert tr.current.joined_late
    assert kinds(tr.on_event("running", SUCCESS, stamp_ns=T0 + 50)) == [("end", "running", "success")]
    # unstamped events count as live
    tr.grace_expired("running")
    assert not tr.on_event("x", START, stamp_ns=0)[0].episode.joined_late


def test_peek_episode_id_from_cdr():
    syn = SyntheticMessages()
    for eid in ["", "e", "ep_0001", "ü-episode-with-a-long-name-" * 3]:
        assert peek_header_then_string(syn.step(eid, 3)) == eid
        assert peek_header_then_string(syn.event(eid, START, "pick", "Lift")) == eid
    assert peek_header_then_string(b"") is None
    assert peek_header_then_string(b"\x00\x01\x00\x00" + b"\xff" * 20) is None
    assert peek_header_then_string(b"\x00\x07\x00\x00" + b"\x00" * 40) is None  # not plain CDR


@pytest.mark.ros
def test_peek_matches_rclpy_serialisation():
    from rclpy.serialization import serialize_message

    from apo_interfaces.msg import LabelledStep

    msg = LabelledStep(episode_id="ep_rclpy", step_index=7, executed_action=[1.0, 2.0])
    msg.header.frame_id = "base_link"
    assert peek_header_then_string(serialize_message(msg)) == "ep_rclpy"
