"""ArbiterCore's event-driven commands (ROS-free, simulated time): when a command is executed, the rate
limit, the watchdog, and that the labelled steps are the same as in tick mode for the same inputs."""

import numpy as np
import pytest

from apo_core.errors import ConfigError
from apo_intervention.arbiter_core import POLICY, TELEOP, ArbiterCore
from apo_intervention.config import ArbiterConfig, InputConfig
from apo_intervention.mux import Mode

DT = 1 / 16  # control period; powers of two keep the simulated clock exact
EPS = 1 / 1024


def _core(**kw):
    ids = iter(f"ep{i}" for i in range(100))
    kw.setdefault("max_episode_steps", 0)
    kw.setdefault("control_rate_hz", 1 / DT)
    kw.setdefault("policy_outside_episodes", "run")  # these tests are about when commands go out, not episodes
    return ArbiterCore(ArbiterConfig(**kw), id_factory=lambda: next(ids))


def _policy(k):
    return [0.01 * k, -0.01 * k, 0.0, 0.0, 0.0, 0.0, 0.5]


def _teleop(k):
    return [0.5, 0.02 * k, 0.0, 0.0, 0.0, 0.0, -0.5]


# One list of inputs per control period, in arrival order. At most one action of the winning input per
# period ("one per tick"); silent periods are longer than the inputs' timeouts, so both modes hold there.
SCRIPT = (
    [[("policy", _policy(k))] for k in range(6)]
    + [[("teleop", _teleop(k)), ("policy", _policy(10 + k))] for k in range(4)]  # takeover, policy masked
    + [[("teleop", []), ("policy", _policy(20))]]  # deadman let go: the policy has the robot again
    + [[("policy", _policy(21 + k))] for k in range(3)]
    + [[], []]  # silence: hold
    + [[("policy", _policy(30 + k))] for k in range(2)]
    + [[("estop", True), ("policy", _policy(40))]]
    + [[("policy", _policy(41 + k))] for k in range(3)]  # e-stop latched: the policy never gets through
    + [[("estop", False), ("policy", _policy(50))]]
    + [[("teleop", _teleop(10 + k))] for k in range(2)]
    + [[]]
    + [[("policy", [float("nan")] * 7)]]  # rejected: hold
    + [[("policy", _policy(60 + k))] for k in range(3)]
)


def run_script(publish_mode, **kw):
    """Feed SCRIPT with the node's callback order: inputs early in each period, the control timer later."""
    core = _core(publish_mode=publish_mode, policy=InputConfig(priority=10, timeout=0.05),
                 teleop=InputConfig(priority=100, timeout=0.05), **kw)
    ok, _, _ = core.start_episode("lift")
    assert ok
    executed = []

    def keep(tick):
        if tick is not None:
            executed.append(tick)

    for k, period in enumerate(SCRIPT):
        now = k * DT + EPS
        for kind, value in period:
            if kind == "estop":
                core.mux.engage_estop("test") if value else core.mux.release_estop()
                continue
            submit = core.submit_policy if kind == POLICY else core.submit_teleop
            checked = submit(value, now) if kind == TELEOP else submit(value, now, "v1")
            keep(core.on_input(kind, checked, now))
        keep(core.control_tick(k * DT + 2 * EPS))
    return executed


def _signature(ticks):
    return [(tuple(np.round(t.decision.action, 9)), t.step.label, Mode(t.step.mode), t.step.step_index)
            for t in ticks]


@pytest.mark.parametrize("max_rate_hz", [0.0, 40.0, 1000.0])
def test_event_and_tick_modes_execute_the_same_labelled_steps(max_rate_hz):
    tick_steps = _signature(run_script("tick"))
    event_steps = _signature(run_script("event", max_rate_hz=max_rate_hz))
    assert event_steps == tick_steps
    assert len(tick_steps) == len(SCRIPT)  # one step per period in both
    modes = [m for _, _, m, _ in tick_steps]
    labels = [lb for _, lb, _, _ in tick_steps]
    assert modes[:6] == [Mode.AUTONOMOUS] * 6 and modes[6:10] == [Mode.HUMAN] * 4
    assert labels[6:10] == [2] * 4 and labels.count(2) == 6
    assert modes[14:16] == [Mode.HOLD] * 2 and modes[18:22] == [Mode.ESTOP] * 4
    assert modes[-4] == Mode.HOLD and modes[-3:] == [Mode.AUTONOMOUS] * 3


def test_event_mode_commands_at_arrival_and_tick_stays_quiet_while_an_input_drives():
    core = _core()
    assert core.control_tick(0.0).decision.mode == Mode.HOLD  # watchdog: nothing drives
    tick = core.on_input(POLICY, core.submit_policy(_policy(1), 0.1, "v1"), 0.1)
    assert tick is not None and tick.decision.source == POLICY and list(tick.decision.action) == _policy(1)
    assert core.control_tick(0.11) is None  # the policy drives: its commands come with its actions
    assert core.control_tick(0.7).decision.mode == Mode.HOLD  # stale after policy.timeout 0.5 s
    assert core.ticks == 3


def test_masked_rejected_and_estop_inputs_cause_no_command():
    core = _core()
    core.start_episode()
    assert core.on_input(TELEOP, core.submit_teleop(_teleop(1), 0.0), 0.0).step.label == 2
    assert core.on_input(POLICY, core.submit_policy(_policy(1), 0.1), 0.1) is None  # masked by the human
    assert core.on_input(POLICY, core.submit_policy([1.0] * 3, 0.4), 0.4) is None  # rejected
    core.mux.engage_estop("test")
    assert core.on_input(TELEOP, core.submit_teleop(_teleop(2), 0.5), 0.5) is None
    tick = core.control_tick(0.5)
    assert tick.decision.mode == Mode.ESTOP and tick.step.label == 1
    assert [core.on_input(POLICY, core.submit_policy(_policy(k), 0.6 + k), 0.6 + k) for k in range(3)] == [None] * 3


def test_a_burst_is_rate_limited_and_the_newest_action_wins():
    core = _core(max_rate_hz=10.0)
    core.start_episode()
    out = [core.on_input(POLICY, core.submit_policy(_policy(k), k * 0.001), k * 0.001) for k in range(30)]
    executed = [t for t in out if t is not None]
    assert len(executed) == 1 and list(executed[0].decision.action) == _policy(0)
    assert core.pending_due() == pytest.approx(0.1)
    assert core.flush(0.05) is None and core.pending_due() is not None  # not due yet
    assert core.control_tick(0.06) is None  # the watchdog does not execute early either
    late = core.flush(0.1)
    assert list(late.decision.action) == _policy(29) and late.step.step_index == 1
    assert core.pending_due() is None and core.flush(0.3) is None  # executed once, not again


def test_a_waiting_command_is_superseded_not_duplicated():
    core = _core(max_rate_hz=10.0)
    core.on_input(POLICY, core.submit_policy(_policy(0), 0.0), 0.0)
    assert core.on_input(POLICY, core.submit_policy(_policy(1), 0.05), 0.05) is None
    assert core.pending_due() is not None
    # the watchdog finds it overdue and executes it; the flush timer that fires later finds nothing
    assert list(core.control_tick(0.12).decision.action) == _policy(1)
    assert core.flush(0.13) is None and core.ticks == 2


def test_estop_drops_a_waiting_command_and_the_watchdog_holds():
    core = _core(max_rate_hz=10.0)
    core.on_input(POLICY, core.submit_policy(_policy(0), 0.0), 0.0)
    core.on_input(POLICY, core.submit_policy(_policy(1), 0.02), 0.02)
    core.mux.engage_estop("test")
    assert core.flush(0.1) is None and core.pending_due() is None
    assert core.control_tick(0.1).decision.mode == Mode.ESTOP


def test_tick_mode_executes_only_on_the_control_tick():
    core = _core(publish_mode="tick")
    assert core.on_input(POLICY, core.submit_policy(_policy(1), 0.0), 0.0) is None
    assert core.pending_due() is None
    assert [core.control_tick(k * DT).decision.source for k in range(3)] == [POLICY] * 3  # re-executed


def test_step_limit_ends_an_event_driven_episode_after_its_last_command():
    core = _core(max_episode_steps=3, max_rate_hz=1000.0)
    core.start_episode()
    ends = [[e.event.name for e in core.on_input(POLICY, core.submit_policy(_policy(k), k * 0.01), k * 0.01).events]
            for k in range(3)]
    assert ends == [[], [], ["FAILURE", "END"]]
    assert core.on_input(POLICY, core.submit_policy(_policy(9), 0.1), 0.1).step is None  # outside an episode


def test_bad_publish_settings_are_refused_naming_the_key():
    from apo_core.config import load_config

    with pytest.raises(ConfigError, match="publish_mode"):
        load_config(ArbiterConfig, {"publish_mode": "sometimes"})
    with pytest.raises(ConfigError, match="max_rate_hz"):
        load_config(ArbiterConfig, {"max_rate_hz": -5.0})
    assert load_config(ArbiterConfig, {"control_rate_hz": 8.0}).effective_max_rate_hz() == 8.0
    assert load_config(ArbiterConfig, {"max_rate_hz": 30.0}).effective_max_rate_hz() == 30.0
