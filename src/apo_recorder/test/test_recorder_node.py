"""The recorder node in-process over real DDS: episodes -> bags, routing, services, errors, diagnostics."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from apo_core import topics as T  # noqa: E402
from apo_recorder import contract, iter_messages, list_episode_bags, read_bag_info  # noqa: E402
from apo_recorder.recorder_node import RecorderNode  # noqa: E402
from apo_recorder.testing import EpisodeProbe  # noqa: E402
from apo_ros.testing import RosGraph  # noqa: E402


def make_recorder(graph, output_dir, **params):
    params.setdefault("grace_period_s", 0.3)
    params.setdefault("flush_period_s", 0.1)
    params.setdefault("diagnostics_period_s", 0.2)
    overrides = [Parameter("output_dir", value=str(output_dir))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return graph.add(RecorderNode(context=graph.context, parameter_overrides=overrides))


def steps_of(bag):
    return [(m.msg.episode_id, m.msg.step_index) for m in iter_messages(bag, [T.STEP])]


def test_three_episodes_three_labelled_bags(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    outcomes = {"ep_a": ("success", 2), "ep_b": ("failure", 3), "ep_c": ("abort", 4)}
    n = 15
    with RosGraph() as g:
        rec = make_recorder(g, tmp_path)
        probe = EpisodeProbe(g)
        diags = []
        probe.node.create_subscription(DiagnosticArray, T.DIAGNOSTICS, diags.append, 10)
        probe.wait_for_recorder()
        for k, (eid, (_, event)) in enumerate(outcomes.items()):
            probe.start(eid, instruction=f"instruction {eid}", task="Lift", policy_version=f"v{k}")
            g.wait_until(lambda eid=eid: rec.status()["episode_id"] == eid, what="episode start")
            for i in range(n):
                probe.step(eid, i, label=1 if i < 10 else 2)
            g.wait_until(lambda: rec.status()["episode_messages_written"] >= 1 + 4 * n, what="messages written")
            probe.end(eid, event)
            g.wait_until(lambda k=k: rec.status()["bags_completed"] == k + 1, what="bag closed")
        g.wait_until(lambda: any(s.name.startswith("apo_recorder") and
                                 {kv.key for kv in s.values} >= {"messages_written", "messages_dropped", "episode_id"}
                                 for d in diags for s in d.status), what="diagnostics")
        status = rec.status()
    assert status["messages_dropped"] == 0 and status["bags_failed"] == 0 and status["state"] == "idle"

    bags = list_episode_bags(tmp_path)
    assert [b.name for b in bags] == list(outcomes)
    for k, bag in enumerate(bags):
        eid = bag.name
        info = read_bag_info(bag)
        assert info.custom_data == {
            contract.KEY_EPISODE_ID: eid, contract.KEY_INSTRUCTION: f"instruction {eid}", contract.KEY_TASK: "Lift",
            contract.KEY_OUTCOME: outcomes[eid][0], contract.KEY_POLICY_VERSION: f"v{k}",
            contract.KEY_SCHEMA_VERSION: "1", contract.KEY_RECORDER_VERSION: "0.1.0"}
        assert set(info.topics) == set(contract.DEFAULT_TOPICS)  # every default topic has its connection
        assert info.topics[T.STEP].msgtype == "apo_interfaces/msg/LabelledStep"
        assert steps_of(bag) == [(eid, i) for i in range(n)]  # every step, contiguous, in order
        msgs = list(iter_messages(bag))  # decodes everything from the bag's own definitions
        by_topic = {}
        for m in msgs:
            by_topic.setdefault(m.topic, []).append(m)
        assert len(by_topic[T.COMMAND]) == len(by_topic[T.POLICY_ACTION]) == len(by_topic[T.ROBOT_STATE]) == n
        assert 1 <= len(by_topic[T.IMAGE]) <= n  # best effort
        assert by_topic[T.IMAGE][0].msg.encoding == "rgb8"
        assert [m.msg.label for m in by_topic[T.STEP]] == [1] * 10 + [2] * (n - 10)
        assert [m.msg.event for m in by_topic[T.EPISODE]] == [0, outcomes[eid][1]]
        assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)
        # offered QoS of the publishers, as rosbag2 stores it
        assert info.topics[T.IMAGE].offered_qos_profiles[0]["reliability"] == "best_effort"
        assert info.topics[T.EPISODE].offered_qos_profiles[0]["durability"] == "transient_local"


def test_back_to_back_episodes_route_steps_by_episode_id(tmp_path):
    """A step of the next episode can arrive before its START: it still lands in its own bag."""
    with RosGraph() as g:
        rec = make_recorder(g, tmp_path, grace_period_s=2.0)
        probe = EpisodeProbe(g)
        probe.wait_for_recorder()
        probe.start("first")
        for i in range(10):
            probe.step("first", i, with_observation=False)
        probe.end("first")
        probe.step("second", 0, with_observation=False)  # before START(second), during first's grace
        probe.start("second")
        for i in range(1, 10):
            probe.step("second", i, with_observation=False)
        probe.end("second", probe.EpisodeEvent.EVENT_END)
        g.wait_until(lambda: rec.status()["bags_completed"] == 2, 20, what="two bags")
    assert steps_of(tmp_path / "first") == [("first", i) for i in range(10)]
    assert steps_of(tmp_path / "second") == [("second", i) for i in range(10)]
    assert read_bag_info(tmp_path / "first").outcome == "success"
    assert read_bag_info(tmp_path / "second").outcome == "unknown"


def test_pause_stop_start_services(tmp_path):
    from std_srvs.srv import SetBool, Trigger

    with RosGraph() as g:
        rec = make_recorder(g, tmp_path)
        probe = EpisodeProbe(g)
        pause = probe.node.create_client(SetBool, T.RECORDER_PAUSE)
        stop = probe.node.create_client(Trigger, T.RECORDER_STOP)
        start = probe.node.create_client(Trigger, T.RECORDER_START)
        probe.wait_for_recorder()
        written = lambda: rec.status()["episode_messages_written"]  # noqa: E731

        # pause: steps 5..9 are not written, the bag stays open
        probe.start("p")
        for i in range(5):
            probe.step("p", i, with_observation=False)
        g.wait_until(lambda: written() >= 6, what="steps 0-4")
        assert g.call(pause, SetBool.Request(data=True)).success
        assert rec.status()["state"] == "paused"
        for i in range(5, 10):
            probe.step("p", i, with_observation=False)
        g.wait_until(lambda: rec.status()["messages_skipped_paused"] >= 5, what="paused steps")
        assert g.call(pause, SetBool.Request(data=False)).success
        for i in range(10, 15):
            probe.step("p", i, with_observation=False)
        g.wait_until(lambda: written() >= 11, what="steps 10-14")
        probe.end("p")
        g.wait_until(lambda: rec.status()["bags_completed"] == 1, what="bag p")

        # stop: the open bag is closed at once (outcome unknown), nothing more is recorded
        probe.start("q")
        for i in range(5):
            probe.step("q", i, with_observation=False)
        g.wait_until(lambda: written() >= 6, what="steps of q")
        resp = g.call(stop, Trigger.Request())
        assert resp.success and "closed" in resp.message
        g.wait_until(lambda: rec.status()["bags_completed"] == 2, what="bag q")
        assert rec.status()["state"] == "stopped"
        probe.end("q")
        probe.start("r")
        for i in range(3):
            probe.step("r", i, with_observation=False)
        g.wait_until(lambda: rec._tracker.current is not None
                     and rec._tracker.current.episode_id == "r", what="START r seen while stopped")
        # start: recording resumes with the running episode r
        resp = g.call(start, Trigger.Request())
        assert resp.success and "'r'" in resp.message
        for i in range(3, 8):
            probe.step("r", i, with_observation=False)
        g.wait_until(lambda: written() >= 5, what="steps of r")
        probe.end("r")
        g.wait_until(lambda: rec.status()["bags_completed"] == 3, what="bag r")

    assert steps_of(tmp_path / "p") == [("p", i) for i in list(range(5)) + list(range(10, 15))]
    assert steps_of(tmp_path / "q") == [("q", i) for i in range(5)]
    assert read_bag_info(tmp_path / "q").outcome == "unknown"
    r_steps = [i for _, i in steps_of(tmp_path / "r")]
    assert r_steps[-5:] == [3, 4, 5, 6, 7] and read_bag_info(tmp_path / "r").outcome == "success"


def test_unwritable_output_dir_logs_a_clear_error_and_keeps_running(tmp_path, capfd):
    from std_srvs.srv import SetBool

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    out = blocker / "bags"
    with RosGraph() as g:
        rec = make_recorder(g, out)
        probe = EpisodeProbe(g)
        pause = probe.node.create_client(SetBool, T.RECORDER_PAUSE)
        probe.wait_for_recorder()
        assert str(out) in rec.status()["last_error"]
        for eid in ("e1", "e2"):
            probe.start(eid)
            for i in range(5):
                probe.step(eid, i)
            probe.end(eid)
        g.wait_until(lambda: rec.status()["bags_failed"] >= 2, what="both episodes failing")
        assert g.call(pause, SetBool.Request(data=True)).success  # still serving
        assert g.call(pause, SetBool.Request(data=False)).success
        status = rec.status()
    assert status["bags_completed"] == 0
    err = capfd.readouterr().err
    assert f"output_dir {out} is not writable" in err
    assert "not recorded" in err


def test_late_recorder_skips_finished_episodes_and_joins_the_running_one(tmp_path):
    with RosGraph() as g:
        probe = EpisodeProbe(g)
        probe.start("old")
        probe.end("old")
        probe.start("running")  # latched history: the recorder sees these three when it subscribes
        rec = make_recorder(g, tmp_path)
        probe.wait_for_recorder()
        g.wait_until(lambda: rec.status()["episode_id"] == "running", what="joining the running episode")
        for i in range(5):
            probe.step("running", i, with_observation=False)
        g.wait_until(lambda: rec.status()["episode_messages_written"] >= 6, what="steps")
        probe.end("running")
        g.wait_until(lambda: rec.status()["bags_completed"] == 1, what="bag")
    assert [b.name for b in list_episode_bags(tmp_path)] == ["running"]
    assert not (tmp_path / "old").exists()
    assert steps_of(tmp_path / "running") == [("running", i) for i in range(5)]


def test_record_between_episodes_and_extra_topics(tmp_path):
    from std_msgs.msg import String

    from apo_recorder.recorder_node import parse_topics

    assert parse_topics(["/apo/step", "/note:std_msgs/String"]) == {
        "/apo/step": "apo_interfaces/msg/LabelledStep", "/note": "std_msgs/msg/String"}
    with pytest.raises(ValueError, match="no known type"):
        parse_topics(["/unknown"])
    with RosGraph() as g:
        rec = make_recorder(g, tmp_path, record_between_episodes=True,
                            topics=[T.EPISODE, T.STEP, "/note:std_msgs/msg/String"])
        probe = EpisodeProbe(g)
        note = probe.node.create_publisher(String, "/note", 10)
        for pub in (note, probe.pubs[T.EPISODE], probe.pubs[T.STEP]):
            g.wait_for_subscribers(pub)
        note.publish(String(data="before"))
        g.wait_until(lambda: rec.status()["state"] == "recording_between_episodes", what="between bag")
        g.wait_until(lambda: rec.status()["messages_written"] >= 1, what="between message")
        probe.start("e")
        for i in range(3):
            probe.step("e", i, with_observation=False)
        note.publish(String(data="during"))
        g.wait_until(lambda: rec.status()["episode_messages_written"] >= 5, what="episode messages")
        probe.end("e")
        g.wait_until(lambda: rec.status()["bags_completed"] == 2, what="both bags closed")
    bags = list_episode_bags(tmp_path)
    between = [b for b in bags if b.name.startswith("between_")]
    assert len(between) == 1 and (tmp_path / "e") in bags
    assert read_bag_info(between[0]).episode_id == ""
    assert [m.msg.data for m in iter_messages(between[0], ["/note"])] == ["before"]
    notes = [m.msg.data for m in iter_messages(tmp_path / "e", ["/note"])]
    assert notes[-1] == "during"  # "before" may also be there: it is within the pre-roll
    assert set(read_bag_info(tmp_path / "e").topics) == {T.EPISODE, T.STEP, "/note"}
