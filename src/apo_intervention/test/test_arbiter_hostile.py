"""Hostile requests and messages to an arbiter process over real DDS.

Each service gets requests an attacker on the domain (or a buggy client) could send: unknown command
codes, a 100,000-character instruction, control characters, blank text, outcomes with no episode,
repeated e-stop toggles; the subscriptions get malformed actions. Every bad request must be answered
with success=false and a message saying why, nothing may start, and afterwards the arbiter must
still answer a good request and keep publishing commands. Run as its own process so that a callback
that raised would end it (in-process graphs keep spinning after an exception).
"""

from __future__ import annotations

import signal

import pytest

pytestmark = pytest.mark.ros

NAN = float("nan")


def test_hostile_requests_are_refused_and_the_arbiter_keeps_serving(graph, probe, tmp_path):
    from std_srvs.srv import SetBool

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
    from apo_interfaces.srv import EpisodeControl
    from apo_ros.qos import topic_qos
    from apo_ros.testing import start_node_process, stop_process

    Req = EpisodeControl.Request
    log = tmp_path / "arbiter.log"
    proc = start_node_process("apo_intervention.arbiter_node", ["--ros-args", "-p", "control_rate_hz:=20.0"],
                              log_path=str(log))
    try:
        episode = probe.create_client(EpisodeControl, topics.EPISODE_CONTROL)
        estop = probe.create_client(SetBool, topics.ESTOP_SERVICE)
        policy = probe.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        teleop = probe.create_publisher(ActionCommand, topics.TELEOP_ACTION, topic_qos(topics.TELEOP_ACTION))
        state = probe.create_publisher(RobotState, topics.ROBOT_STATE, topic_qos(topics.ROBOT_STATE))
        assert episode.wait_for_service(timeout_sec=60) and estop.wait_for_service(timeout_sec=60)
        for pub in (policy, teleop, state):
            graph.wait_for_subscribers(pub, timeout=60)
        graph.wait_for_publishers(probe, topics.COMMAND, timeout=60)

        def ask(command, instruction=""):
            return graph.call(episode, Req(command=command, instruction=instruction), timeout=30)

        hostile = [
            (99, "", "unknown command 99 (known: START=0"),
            (255, "x" * 100_000, "unknown command 255"),
            (4, "", "unknown command 4"),
            (Req.START, "x" * 100_000, "instruction is 100000 characters long (at most 1000)"),
            (Req.START, "lift the cube\x1b[2J\x07", "control character '\\x1b'"),
            (Req.START, "lift\nthe cube", "control character '\\n'"),
            (Req.START, " \t ", "control character '\\t'"),
            (Req.START, "   ", "instruction is blank"),
            (Req.SUCCESS, "x" * 100_000, "no active episode"),
            (Req.ABORT, "\x1b", "no active episode"),
        ]
        for command, instruction, why in hostile:
            res = ask(command, instruction)
            assert not res.success, (command, instruction[:20], res.message)
            assert why in res.message, res.message
            assert len(res.message) < 500  # the reply does not echo a huge request back
        assert not [e for e in probe.rec.get(topics.EPISODE) if e.event == EpisodeEvent.EVENT_START]

        # Malformed inputs on the subscriptions: rejected by the mux, never executed.
        for values in ([NAN] * 7, [0.1] * 10_000, [], [float("inf")] + [0.0] * 6):
            policy.publish(ActionCommand(action=values))
            teleop.publish(ActionCommand(action=values))
        state.publish(RobotState(task_success=True))

        # The e-stop service toggles cleanly however often it is asked.
        replies = [graph.call(estop, SetBool.Request(data=on), timeout=30) for on in (True, True, False, False)]
        assert [r.success for r in replies] == [True] * 4
        assert [r.message for r in replies] == ["e-stop engaged", "e-stop was already engaged", "e-stop released",
                                                "e-stop was not engaged"]

        # A good request is still answered, and the control loop still runs.
        res = ask(Req.START, "lift the red cube")
        assert res.success and res.episode_id, res.message
        graph.wait_until(lambda: any(e.event == EpisodeEvent.EVENT_START and e.episode_id == res.episode_id
                                     and e.instruction == "lift the red cube" for e in probe.rec.get(topics.EPISODE)),
                         timeout=30, what="the START event of the good request")
        seen = probe.rec.count(topics.COMMAND)
        graph.wait_until(lambda: probe.rec.count(topics.COMMAND) >= seen + 3, timeout=30,
                         what="commands after the hostile requests")
        assert all(c.source == c.SOURCE_HOLD and all(v == v for v in c.action)
                   for c in probe.rec.get(topics.COMMAND)[seen:])  # no input was valid: holding
        assert ask(Req.ABORT).success
        assert proc.poll() is None, log.read_text()
    finally:
        code = stop_process(proc, sig=signal.SIGTERM, timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
