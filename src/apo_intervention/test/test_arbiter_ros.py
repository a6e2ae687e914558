"""The arbiter node over real DDS: commands, live labels, hold, validation, e-stop, episodes, config.

Assertions are about what arrived and in which order, never about when: streams that depend on the
arbiter's ticks are driven by the probe's reaction to the steps it receives.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from apo_intervention.mux import Mode

pytestmark = pytest.mark.ros

P = [0.1, 0.2, -0.1, 0.0, 0.05, -0.05, -1.0]  # the policy's action in these tests


def action_msg(values, version=""):
    from apo_interfaces.msg import ActionCommand

    msg = ActionCommand()
    msg.action = [float(v) for v in values]
    msg.policy_version = version
    return msg


class Rig:
    """Probe-side publishers and clients for one arbiter, with discovery waited for."""

    def __init__(self, graph, probe, arbiter):
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool

        from apo_core import topics
        from apo_interfaces.msg import ActionCommand, RobotState
        from apo_interfaces.srv import EpisodeControl
        from apo_ros.qos import topic_qos

        self.g, self.probe, self.arbiter, self.topics = graph, probe, arbiter, topics
        self.policy = probe.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        self.teleop = probe.create_publisher(ActionCommand, topics.TELEOP_ACTION, topic_qos(topics.TELEOP_ACTION))
        self.estop = probe.create_publisher(Bool, topics.ESTOP, topic_qos(topics.ESTOP))
        self.robot_state = probe.create_publisher(RobotState, topics.ROBOT_STATE, topic_qos(topics.ROBOT_STATE))
        self.episode_client = probe.create_client(EpisodeControl, topics.EPISODE_CONTROL)
        self.estop_client = probe.create_client(SetBool, topics.ESTOP_SERVICE)
        for pub in (self.policy, self.teleop, self.estop, self.robot_state):
            graph.wait_for_subscribers(pub)
        for topic in (topics.COMMAND, topics.STEP, topics.MODE, topics.EPISODE):
            graph.wait_for_publishers(probe, topic)
        self._policy_timer = None

    def rec(self, topic):
        return self.probe.rec.get(getattr(self.topics, topic))

    def stream_policy(self, values=P, period=0.02, version="v7"):
        self._policy_timer = self.probe.create_timer(period, lambda: self.policy.publish(action_msg(values, version)))

    def stop_policy(self):
        self._policy_timer.cancel()

    def episode(self, command, instruction=""):
        from apo_interfaces.srv import EpisodeControl

        req = EpisodeControl.Request()
        req.command = getattr(EpisodeControl.Request, command.upper())
        req.instruction = instruction
        return self.g.call(self.episode_client, req)

    def set_estop(self, on: bool):
        from std_srvs.srv import SetBool

        return self.g.call(self.estop_client, SetBool.Request(data=on))

    def wait_steps(self, n, what="steps"):
        self.g.wait_until(lambda: len(self.rec("STEP")) >= n, timeout=20, what=f"{n} {what}")

    def wait_commands(self, pred, n=1, what="commands", start=None):
        """Wait until ``n`` commands satisfying ``pred`` arrived after index ``start`` (default: now)."""
        start = len(self.rec("COMMAND")) if start is None else start
        self.g.wait_until(lambda: sum(pred(c) for c in self.rec("COMMAND")[start:]) >= n, timeout=20, what=what)


@pytest.fixture(params=["event", "tick"])
def rig(request, graph, probe, make_node):
    """The tests below hold in both publish modes (tick: the fixed-rate behaviour of before)."""

    def build(**params):
        from apo_intervention.arbiter_node import ArbiterNode

        # policy.timeout 2 s (not 0.5): a stream at 50 Hz from this process was measured pausing 0.5-2 s
        # on a starved 2-core VM, and a policy gone stale by accident puts hold steps where a test
        # expects the policy's; the tests about staleness set their own timeouts.
        # policy_outside_episodes run: most tests here are about the mux and send actions outside episodes;
        # the default (hold) has its own test.
        base = dict(control_rate_hz=20.0, diagnostics_period=0.2, publish_mode=request.param, policy__timeout=2.0,
                    policy_outside_episodes="run")
        base.update(params)
        return Rig(graph, probe, make_node(ArbiterNode, **base))

    return build


def is_policy(cmd):
    return cmd.source == cmd.SOURCE_POLICY


# --------------------------------------------------------------------------------------------------
def test_policy_only_commands_are_the_policys_with_label_1(rig):
    r = rig()
    r.stream_policy()
    r.wait_commands(is_policy, 3, "policy commands")
    res = r.episode("start", "stack the cubes")
    assert res.success and res.episode_id
    r.g.wait_until(lambda: sum(s.mode == Mode.AUTONOMOUS for s in r.rec("STEP")) >= 20, what="20 policy steps")
    assert r.episode("success").success
    steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id]
    for s in steps:
        assert s.label == s.LABEL_AUTONOMOUS
        if s.mode == Mode.AUTONOMOUS:
            assert list(s.executed_action) == P and list(s.policy_action) == P and s.policy_version == "v7"
    assert [s.step_index for s in steps] == list(range(len(steps)))
    policy_cmds = [c for c in r.rec("COMMAND") if is_policy(c)]
    assert all(list(c.action) == P and c.policy_version == "v7" for c in policy_cmds)
    start = [e for e in r.rec("EPISODE") if e.event == e.EVENT_START][0]
    assert start.instruction == "stack the cubes" and start.task == "Lift" and start.policy_version == "v7"


def test_teleop_burst_is_labelled_2_exactly_and_hands_back(rig, graph, request):
    # The burst ends with an explicit release, so long timeouts only keep a late message from looking
    # stale: on a starved 2-core VM this process was measured stalling 0.5-2 s between callbacks, and a
    # stale input (not the arbiter) then interleaves holds and policy steps with the human's.
    r = rig(control_rate_hz=10.0, teleop__timeout=5.0, policy__timeout=5.0)
    r.stream_policy()
    r.wait_commands(is_policy, 3)
    burst, first = 8, 5
    sent = []

    def on_step(step):  # react to the arbiter's steps: one teleop action per received step, then release
        k = step.step_index - first
        if 0 <= k < burst:
            values = [0.5, 0.01 * k, 0.0, 0.0, 0.0, 0.0, 1.0]
            sent.append(values)
            r.teleop.publish(action_msg(values))
        elif k == burst:
            r.teleop.publish(action_msg([]))  # deadman let go

    from apo_core import topics
    from apo_interfaces.msg import LabelledStep
    from apo_ros.qos import topic_qos

    sub = r.probe.create_subscription(LabelledStep, topics.STEP, on_step, topic_qos(topics.STEP))
    graph.wait_until(lambda: sub.get_publisher_count() >= 1, what="step subscription matched")
    res = r.episode("start")
    r.wait_steps(first + burst + 10)
    r.episode("abort")
    steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id]
    assert [s.step_index for s in steps] == list(range(len(steps)))
    human = [s for s in steps if s.label == s.LABEL_HUMAN]
    for s in steps:
        if s.label == s.LABEL_HUMAN:
            assert s.mode == Mode.HUMAN and list(s.executed_action) in sent
            assert list(s.policy_action) == P  # the policy's proposal is recorded next to the correction
        else:
            assert s.label == s.LABEL_AUTONOMOUS and s.mode != Mode.HUMAN
            assert list(s.executed_action) == P or s.mode == Mode.HOLD
    idx = [s.step_index for s in human]
    assert idx and idx == list(range(idx[0], idx[-1] + 1)), "human steps must be one contiguous block"
    assert idx[0] >= first + 1  # teleop k is only sent on receipt of step first+k
    ks = [sent.index(list(s.executed_action)) for s in human]
    assert ks == sorted(ks)  # the human's actions in the order sent (how many steps each: timing)
    if "event" in request.node.name:  # event mode: one command per new teleop action, never a repeat
        assert len(set(ks)) == len(ks) <= burst
    after = [s for s in steps if s.step_index > idx[-1]]
    assert after and all(s.label == s.LABEL_AUTONOMOUS for s in after)
    assert list(after[0].executed_action) == P or after[0].mode == Mode.HOLD
    modes = [m.mode for m in r.rec("MODE")]
    assert 1 in modes and modes[-1] == 0  # HUMAN was published, and AUTONOMOUS again after the burst


def test_teleop_silence_returns_to_policy_after_its_timeout(rig):
    r = rig(teleop__timeout=0.15)
    r.stream_policy()
    r.wait_commands(is_policy, 2)
    mark = len(r.rec("COMMAND"))
    for _ in range(3):
        r.teleop.publish(action_msg([0.0, 0.5, 0, 0, 0, 0, 1.0]))
    r.wait_commands(lambda c: c.source == c.SOURCE_TELEOP, 1, "a teleop command", start=mark)
    r.wait_commands(is_policy, 2, "policy commands after teleop silence")  # no release sent: timeout


def test_all_inputs_silent_hold_zero_motion_gripper_kept(rig):
    r = rig()
    res = r.episode("start")
    r.wait_steps(3)
    for s in r.rec("STEP"):
        assert s.mode == Mode.HOLD and s.label == s.LABEL_AUTONOMOUS and list(s.policy_action) == []
        assert list(s.executed_action) == [0, 0, 0, 0, 0, 0, -1.0]  # hold_gripper_value before any command
    assert all(c.source == c.SOURCE_HOLD for c in r.rec("COMMAND"))
    assert r.rec("MODE")[0].mode == 2 and "all inputs inactive" in r.rec("MODE")[0].reason
    closed = [0.3, 0, 0, 0, 0, 0, 0.8]
    r.stream_policy(closed)
    r.wait_commands(is_policy, 2)
    r.stop_policy()
    r.wait_commands(lambda c: c.source == c.SOURCE_HOLD, 2, "hold after the policy went silent")
    hold = [c for c in r.rec("COMMAND") if c.source == c.SOURCE_HOLD][-1]
    assert list(hold.action) == [0, 0, 0, 0, 0, 0, 0.8]  # zero motion, gripper kept closed on the object
    r.g.wait_until(lambda: any(s.mode == Mode.HOLD and list(s.executed_action) == [0, 0, 0, 0, 0, 0, 0.8]
                               for s in r.rec("STEP") if s.episode_id == res.episode_id), what="hold steps")
    r.episode("failure")


def test_nan_inf_wrong_size_and_out_of_range_never_reach_command(rig, graph):
    from apo_core import topics

    r = rig()
    bad = [[math.nan] * 7, [0.1, math.inf, 0, 0, 0, 0, 0], [-math.inf] + [0.0] * 6, [0.2] * 6, [0.2] * 9,
           [5.0, -7.0, 0.3, 0, 0, 0, 2.0]]
    stream = [P] + bad * 5 + [P]
    for i, values in enumerate(stream):  # paced by receipt: a reliable keep-last queue may drop a burst
        r.policy.publish(action_msg(values))
        graph.wait_until(lambda i=i: r.arbiter.mux.stats("policy").received > i, what=f"policy message {i}")
    r.wait_commands(lambda c: True, 3)
    for c in r.rec("COMMAND"):
        assert len(c.action) == 7 and all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in c.action)
    st = r.arbiter.mux.stats("policy")
    assert (st.rejected_nonfinite, st.rejected_dimension, st.clamped) == (15, 10, 5)

    def diag_values():
        for arr in reversed(r.probe.rec.get(topics.DIAGNOSTICS)):
            return {kv.key: kv.value for kv in arr.status[0].values}
        return {}

    def final(d):  # a report made after every message was counted
        return d.get("policy.received") == str(len(stream))

    graph.wait_until(lambda: final(diag_values()), what="diagnostics after all messages")
    d = diag_values()
    assert d["policy.rejected_nonfinite"] == "15" and d["policy.rejected_dimension"] == "10"
    assert d["policy.clamped"] == "5" and d["estop"] == "False"
    assert d["teleop.why"] == "no valid action received yet"
    warn = [a.status[0] for a in r.probe.rec.get(topics.DIAGNOSTICS) if "rejected" in a.status[0].message]
    assert warn and warn[0].level == warn[0].WARN


def test_estop_latches_until_released_through_the_service(rig, graph):
    from std_msgs.msg import Bool

    r = rig()
    r.stream_policy([0.2, 0, 0, 0, 0, 0, 0.6])
    r.wait_commands(is_policy, 2)
    res = r.episode("start")

    def steps():
        return [s for s in r.rec("STEP") if s.episode_id == res.episode_id]

    def wait_mode(mode, after=0, what=""):
        graph.wait_until(lambda: any(s.mode == mode for s in steps()[after:]), what=what)

    wait_mode(Mode.AUTONOMOUS, what="an autonomous step")
    r.estop.publish(Bool(data=True))
    wait_mode(Mode.ESTOP, what="e-stop steps")
    r.estop.publish(Bool(data=False))  # not a release
    r.teleop.publish(action_msg([0.9] * 7))  # nor does the human override it
    n = len(steps())
    r.wait_steps(len(r.rec("STEP")) + 10, "steps during e-stop")  # > teleop.timeout: it is stale after
    assert r.arbiter.mux.estop_engaged and [m.mode for m in r.rec("MODE")][-1] == Mode.ESTOP
    res2 = r.set_estop(False)
    assert res2.success and "released" in res2.message
    wait_mode(Mode.AUTONOMOUS, after=n, what="autonomous steps after the release")
    n2 = len(steps())
    assert r.set_estop(True).success
    wait_mode(Mode.ESTOP, after=n2, what="e-stop through the service")
    r.set_estop(False)
    wait_mode(Mode.AUTONOMOUS, after=len(steps()), what="autonomous again")
    r.episode("abort")
    all_steps = steps()
    assert [s.step_index for s in all_steps] == list(range(len(all_steps)))
    modes = [s.mode for s in all_steps]
    # e-stop steps come in exactly two unbroken blocks (topic, service), the first through >= 10 steps
    blocks, run = [], 0
    for prev, cur in zip([None] + modes, modes + [None], strict=True):
        if cur == Mode.ESTOP:
            run += 1
        elif prev == Mode.ESTOP:
            blocks.append(run)
            run = 0
    assert len(blocks) == 2 and blocks[0] >= 10
    for s in all_steps:
        if s.mode == Mode.ESTOP:
            assert s.label == s.LABEL_AUTONOMOUS and list(s.executed_action) == [0, 0, 0, 0, 0, 0, 0.6]
        else:
            assert s.mode == Mode.AUTONOMOUS  # the human's action never got through
    assert "e-stop" in [m for m in r.rec("MODE") if m.mode == Mode.ESTOP][0].reason


def test_episode_control_events_ids_and_contiguous_steps(rig, graph):
    r = rig()
    r.stream_policy()
    ids = []
    for outcome in ("success", "failure", "abort"):
        res = r.episode("start")
        assert res.success
        refused = r.episode("start")
        assert not refused.success and "still active" in refused.message
        r.wait_steps(len(r.rec("STEP")) + 4)
        end = r.episode(outcome)
        assert end.success and end.episode_id == res.episode_id
        ids.append(res.episode_id)
    assert not r.episode("success").success  # nothing active
    assert len(set(ids)) == 3
    graph.wait_until(lambda: len(r.rec("EPISODE")) >= 9, what="9 episode events")
    events = r.rec("EPISODE")
    E = events[0]
    assert [e.event for e in events] == [E.EVENT_START, E.EVENT_SUCCESS, E.EVENT_END,
                                         E.EVENT_START, E.EVENT_FAILURE, E.EVENT_END,
                                         E.EVENT_START, E.EVENT_ABORT, E.EVENT_END]
    assert [e.episode_id for e in events] == [i for i in ids for _ in range(3)]
    assert all(e.instruction == "lift the red cube" and e.task == "Lift" for e in events)  # the task's own
    steps = r.rec("STEP")
    for ep in ids:
        idx = [s.step_index for s in steps if s.episode_id == ep]
        assert len(idx) >= 4 and idx == list(range(len(idx)))
    assert {s.episode_id for s in steps} == set(ids)  # no step outside an episode


def test_by_default_the_policy_drives_only_inside_an_episode(rig, graph):
    """policy_outside_episodes=hold (the default): a fresh policy stream moves the robot only between an
    episode's START and its end; after an abort the commands are holds although the stream goes on."""
    r = rig(policy_outside_episodes="hold")
    r.stream_policy()
    r.wait_commands(lambda c: c.source == c.SOURCE_HOLD, 3, "holds before any episode")
    assert not any(is_policy(c) for c in r.rec("COMMAND"))
    assert r.episode("start").success
    r.wait_commands(is_policy, 3, "policy commands inside the episode")
    assert r.episode("abort").success
    graph.wait_until(lambda: len(r.rec("EPISODE")) >= 3, what="the abort's events")
    mark = len(r.rec("COMMAND"))
    r.wait_commands(lambda c: c.source == c.SOURCE_HOLD, 3, "holds after the abort", start=mark)
    after = r.rec("COMMAND")[mark:]
    # At most one policy command may have been on its way when the episode ended; none after a hold.
    first_hold = next(i for i, c in enumerate(after) if c.source == c.SOURCE_HOLD)
    assert first_hold <= 1 and not any(is_policy(c) for c in after[first_hold:])
    assert all(list(c.action)[:6] == [0.0] * 6 for c in after[first_hold:])


def test_max_episode_length_and_simulator_success_end_episodes(rig, graph):
    from apo_interfaces.msg import RobotState

    r = rig(max_episode_steps=12)
    res = r.episode("start")
    graph.wait_until(lambda: len(r.rec("EPISODE")) >= 3, what="timeout end")
    ev = r.rec("EPISODE")
    assert [e.event for e in ev] == [ev[0].EVENT_START, ev[0].EVENT_FAILURE, ev[0].EVENT_END]
    assert "max_episode_steps=12" in ev[1].reason
    assert [s.step_index for s in r.rec("STEP") if s.episode_id == res.episode_id] == list(range(12))
    assert not r.episode("failure").success  # already over
    # the simulator reports success: only counted after a not-yet-successful state in the episode
    res2 = r.episode("start")
    r.robot_state.publish(RobotState(task_success=True))
    r.robot_state.publish(RobotState(task_success=False))
    r.robot_state.publish(RobotState(task_success=True))
    graph.wait_until(lambda: len(r.rec("EPISODE")) >= 6, what="success end")
    ev = r.rec("EPISODE")[3:]
    assert [e.event for e in ev] == [ev[0].EVENT_START, ev[0].EVENT_SUCCESS, ev[0].EVENT_END]
    assert ev[1].episode_id == res2.episode_id and "task_success" in ev[1].reason


def test_task_without_instruction_uses_the_tasks_instruction_and_step_limit(rig, graph):
    # What the deploy graph passes by default: task:=PickPlaceCan, instruction "", max_episode_steps -1.
    # The arbiter takes both from apo_core.tasks (the simulator's own table), without importing apo_sim.
    r = rig(task="PickPlaceCan", instruction="", max_episode_steps=-1, control_rate_hz=200.0)
    res = r.episode("start")  # no instruction in the request either
    assert res.success, res.message
    graph.wait_until(lambda: len(r.rec("EPISODE")) >= 3, timeout=60, what="the step limit ending the episode")
    ev = r.rec("EPISODE")
    assert [e.event for e in ev] == [ev[0].EVENT_START, ev[0].EVENT_FAILURE, ev[0].EVENT_END]
    assert all(e.instruction == "put the can in the bin on the right" and e.task == "PickPlaceCan" for e in ev)
    assert "max_episode_steps=250" in ev[1].reason
    assert len([s for s in r.rec("STEP") if s.episode_id == res.episode_id]) == 250
    # a request's own instruction still wins
    res = r.episode("start", "pick up the can")
    assert res.success and r.arbiter.episodes.instruction == "pick up the can"


def test_bad_config_fails_at_start_naming_the_key(graph, tmp_path):
    from rclpy.parameter import Parameter

    from apo_core.errors import ConfigError
    from apo_intervention.arbiter_node import ArbiterNode

    with pytest.raises(ConfigError, match="contrl_rate_hz.*did you mean 'control_rate_hz'"):
        ArbiterNode(context=graph.context, parameter_overrides=[Parameter("contrl_rate_hz", value=10.0)])
    with pytest.raises(ConfigError, match="teleop.timeout: expected a number"):
        ArbiterNode(context=graph.context, parameter_overrides=[Parameter("teleop.timeout", value="soon")])
    bad = tmp_path / "arbiter.yaml"
    bad.write_text("control_rate_hz: 20\npolicy:\n  prority: 3\n")
    proc = subprocess.run([sys.executable, "-m", "apo_intervention.arbiter_node", "--ros-args",
                           "-p", f"config_file:={bad}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "policy.prority" in proc.stderr and str(bad) in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "apo_intervention.arbiter_node", "--ros-args",
                           "-p", "control_rate_hz:=fast"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "control_rate_hz: expected a number" in proc.stderr


def test_arbiter_process_leaves_the_robot_holding_on_shutdown(graph, probe, tmp_path):
    import signal

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand
    from apo_ros.qos import topic_qos
    from apo_ros.testing import start_node_process, stop_process

    proc = start_node_process("apo_intervention.arbiter_node", ["--ros-args", "-p", "control_rate_hz:=20.0",
                                                                    "-p", "policy_outside_episodes:=run"],
                              log_path=str(tmp_path / "arbiter.log"))
    try:
        pub = probe.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        graph.wait_for_subscribers(pub, timeout=30)
        graph.wait_for_publishers(probe, topics.COMMAND, timeout=30)
        probe.create_timer(0.02, lambda: pub.publish(action_msg(P[:6] + [0.5])))
        graph.wait_until(lambda: any(c.source == c.SOURCE_POLICY for c in probe.rec.get(topics.COMMAND)),
                         timeout=30, what="policy commands from the arbiter process")
    finally:
        code = stop_process(proc, sig=signal.SIGTERM)
    assert code == 0, (tmp_path / "arbiter.log").read_text()
    last = probe.rec.get(topics.COMMAND)[-1]
    assert last.source == last.SOURCE_HOLD and list(last.action) == [0, 0, 0, 0, 0, 0, 0.5]  # gripper kept


# --------------------------------------------------------------------------------------------------
# Event-driven commands (publish_mode: event): one command and one labelled step per new action of the
# winning input, hold from the watchdog, nothing through an e-stop, the rate limit. Counts and order
# only. The watchdog tick is slow (2 Hz) where a test counts commands, so its holds are few and told
# apart by their source.

def _event_policy(k):
    return [0.001 * k, -0.001 * k, 0.0, 0.0, 0.0, 0.0, 0.5]


@pytest.fixture
def event_rig(graph, probe, make_node):
    def build(**params):
        from apo_intervention.arbiter_node import ArbiterNode

        base = dict(publish_mode="event", control_rate_hz=2.0, diagnostics_period=0.5, policy_outside_episodes="run")
        base.update(params)
        return Rig(graph, probe, make_node(ArbiterNode, **base))

    return build


def _send_paced(r, graph, pub_name, actions, input_name):
    """Publish one at a time, each after the arbiter counted the previous one (no queue drops)."""
    stats = r.arbiter.mux.stats(input_name)
    base = stats.received
    for i, values in enumerate(actions):
        getattr(r, pub_name).publish(action_msg(values, "v3"))
        graph.wait_until(lambda i=i: r.arbiter.mux.stats(input_name).received > base + i,
                         what=f"{input_name} action {i}")


def test_every_policy_action_is_one_command_and_one_step_labelled_1(event_rig, graph):
    r = event_rig(max_rate_hz=1000.0, policy__timeout=30.0)  # nothing goes stale: no watchdog holds
    res = r.episode("start")
    graph.wait_until(lambda: len(r.rec("STEP")) >= 1, what="the watchdog's first hold step")
    mark_cmd, mark_step = len(r.rec("COMMAND")), len(r.rec("STEP"))
    actions = [_event_policy(k) for k in range(1, 21)]
    _send_paced(r, graph, "policy", actions, "policy")
    graph.wait_until(lambda: sum(c.source == c.SOURCE_POLICY for c in r.rec("COMMAND")[mark_cmd:]) >= 20,
                     what="20 policy commands")
    graph.wait_until(lambda: sum(s.mode == Mode.AUTONOMOUS for s in r.rec("STEP")[mark_step:]) >= 20,
                     what="20 autonomous steps")
    r.episode("abort")
    cmds = [c for c in r.rec("COMMAND")[mark_cmd:] if c.source == c.SOURCE_POLICY]
    assert [list(c.action) for c in cmds] == actions  # each once, in order
    steps = [s for s in r.rec("STEP")[mark_step:] if s.episode_id == res.episode_id]
    # at 2 Hz the watchdog may still hold (no action yet) between the mark and the first action,
    # and a hold step already executed may be delivered after the mark: holds only before it
    first = next(i for i, s in enumerate(steps) if s.mode != Mode.HOLD)
    assert all(s.mode == Mode.HOLD for s in steps[:first])
    steps = steps[first:]
    assert [list(s.executed_action) for s in steps] == actions
    assert all(s.label == s.LABEL_AUTONOMOUS and s.mode == Mode.AUTONOMOUS for s in steps)
    assert all(list(s.policy_action) == list(s.executed_action) and s.policy_version == "v3" for s in steps)
    all_steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id]
    assert [s.step_index for s in all_steps] == list(range(len(all_steps)))
    assert r.arbiter.ticks == len(r.rec("COMMAND"))  # every executed command was published


def test_teleop_actions_are_one_command_each_labelled_2_and_mask_the_policy(event_rig, graph):
    r = event_rig(max_rate_hz=1000.0, policy__timeout=30.0, teleop__timeout=30.0)
    res = r.episode("start")
    _send_paced(r, graph, "policy", [_event_policy(1)], "policy")
    graph.wait_until(lambda: any(c.source == c.SOURCE_POLICY for c in r.rec("COMMAND")), what="policy command")
    mark = len(r.rec("COMMAND"))
    human = [[0.5, 0.01 * k, 0, 0, 0, 0, -0.5] for k in range(8)]
    _send_paced(r, graph, "teleop", human, "teleop")
    _send_paced(r, graph, "policy", [_event_policy(k) for k in range(2, 6)], "policy")  # masked: no command
    _send_paced(r, graph, "teleop", [[]], "teleop")  # deadman let go
    _send_paced(r, graph, "policy", [_event_policy(9)], "policy")  # the policy drives again
    graph.wait_until(lambda: any(list(c.action) == _event_policy(9) for c in r.rec("COMMAND")), what="handback")
    r.episode("abort")
    after = [c for c in r.rec("COMMAND")[mark:] if c.source != c.SOURCE_HOLD]
    assert [list(c.action) for c in after] == human + [_event_policy(9)]
    assert [c.source for c in after] == [after[0].SOURCE_TELEOP] * 8 + [after[0].SOURCE_POLICY]
    steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id and s.mode != Mode.HOLD]
    assert [s.label for s in steps] == [1] + [2] * 8 + [1]
    assert [list(s.policy_action) for s in steps[1:9]] == [_event_policy(1)] * 8  # the proposal next to the fix


def test_stale_policy_holds_from_the_watchdog_and_estop_lets_nothing_through(event_rig, graph):
    from std_msgs.msg import Bool

    r = event_rig(control_rate_hz=20.0, max_rate_hz=1000.0, policy__timeout=0.2)
    res = r.episode("start")
    _send_paced(r, graph, "policy", [_event_policy(k) for k in range(1, 4)], "policy")
    r.wait_commands(lambda c: c.source == c.SOURCE_HOLD, 3, "hold after the policy went stale")
    hold = [c for c in r.rec("COMMAND") if c.source == c.SOURCE_HOLD][-1]
    assert list(hold.action) == [0, 0, 0, 0, 0, 0, 0.5]  # zero motion, gripper kept
    r.estop.publish(Bool(data=True))
    graph.wait_until(lambda: r.arbiter.mux.estop_engaged, what="e-stop engaged")
    mark = len(r.rec("COMMAND"))
    _send_paced(r, graph, "policy", [_event_policy(k) for k in range(10, 20)], "policy")
    _send_paced(r, graph, "teleop", [[0.9] * 7], "teleop")
    r.wait_steps(len(r.rec("STEP")) + 3, "e-stop steps")
    assert all(c.source == c.SOURCE_HOLD for c in r.rec("COMMAND")[mark:])  # only the watchdog's holds
    r.episode("abort")
    steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id]
    assert [s.step_index for s in steps] == list(range(len(steps)))
    assert sum(s.mode == Mode.AUTONOMOUS for s in steps) == 3  # the three policy actions, once each
    assert all(s.label == 1 for s in steps)
    assert any(s.mode == Mode.ESTOP for s in steps) and any(s.mode == Mode.HOLD for s in steps)
    assert not any(s.mode == Mode.AUTONOMOUS for s in steps[[s.mode for s in steps].index(Mode.ESTOP):])


def test_a_burst_above_max_rate_gives_fewer_commands_and_the_newest_action_last(event_rig, graph):
    r = event_rig(max_rate_hz=2.0, policy__timeout=30.0)  # 0.5 s between commands at most
    res = r.episode("start")
    graph.wait_until(lambda: len(r.rec("STEP")) >= 1, what="the watchdog's first hold step")
    burst = [_event_policy(k) for k in range(1, 31)]
    for values in burst:  # back to back
        r.policy.publish(action_msg(values, "v3"))
    # a reliable keep-last queue may drop older ones, never the newest: it is executed, last
    graph.wait_until(lambda: any(list(c.action) == burst[-1] for c in r.rec("COMMAND")), timeout=30,
                     what="the newest action executed")
    received = r.arbiter.mux.stats("policy").received
    r.episode("abort")
    cmds = [c for c in r.rec("COMMAND") if c.source == c.SOURCE_POLICY]
    assert 1 <= len(cmds) < received, (len(cmds), received)  # rate-limited: most of the burst not executed
    assert list(cmds[-1].action) == burst[-1] and len(cmds) <= 10
    order = [burst.index(list(c.action)) for c in cmds]
    assert order == sorted(order) and len(set(order)) == len(order)  # newer each time, none twice
    steps = [s for s in r.rec("STEP") if s.episode_id == res.episode_id and s.mode == Mode.AUTONOMOUS]
    assert [list(s.executed_action) for s in steps] == [list(c.action) for c in cmds]  # one step each
