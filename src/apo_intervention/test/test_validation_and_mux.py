"""ActionValidator and ActionMux: priorities, timeouts, release, hold, e-stop, validation counts."""

import math

import numpy as np
import pytest

from apo_intervention.mux import ActionMux, Mode, MuxInput
from apo_intervention.validation import ActionValidator, Verdict

LOW, HIGH = [-1.0] * 7, [1.0] * 7


def make_mux(**kw):
    return ActionMux([MuxInput("policy", 10, 0.5), MuxInput("teleop", 100, 0.2, human=True)],
                     ActionValidator(LOW, HIGH), gripper_index=6, **kw)


def act(x, g=0.0):
    return [x, 0.0, 0.0, 0.0, 0.0, 0.0, g]


# --- validator ---------------------------------------------------------------------------------------
def test_validator_verdicts():
    v = ActionValidator(LOW, HIGH)
    assert v.check(act(0.5)).verdict is Verdict.OK
    c = v.check([2.0, -3.0, 0, 0, 0, 0, 0.5])
    assert c.verdict is Verdict.CLAMPED and c.clamped_dims == [0, 1]
    assert c.action.tolist() == [1.0, -1.0, 0, 0, 0, 0, 0.5]
    assert v.check([]).verdict is Verdict.RELEASE
    assert v.check([0.0] * 6).verdict is Verdict.REJECTED_DIMENSION
    assert v.check([0.0] * 8).verdict is Verdict.REJECTED_DIMENSION
    for bad in (math.nan, math.inf, -math.inf):
        r = v.check(act(bad))
        assert r.verdict is Verdict.REJECTED_NONFINITE and r.action is None and "dimension(s) [0]" in r.detail


def test_validator_per_dimension_limits():
    v = ActionValidator([-0.5, -1, -1, -1, -1, -1, 0], [0.5, 1, 1, 1, 1, 1, 1])
    c = v.check([0.9, 0, 0, 0, 0, 0, -1])
    assert c.verdict is Verdict.CLAMPED and c.action[0] == 0.5 and c.action[6] == 0.0
    assert v.is_safe(c.action) and not v.is_safe([0.9, 0, 0, 0, 0, 0, 0]) and not v.is_safe([math.nan] * 7)


# --- mux ---------------------------------------------------------------------------------------------
def test_policy_drives_when_alone_and_labels_1():
    m = make_mux()
    m.submit("policy", act(0.3), now=0.0)
    d = m.tick(0.1)
    assert d.mode is Mode.AUTONOMOUS and d.source == "policy" and d.label == 1
    assert d.action.tolist() == act(0.3)


def test_teleop_takes_over_while_active_then_policy_returns_after_timeout():
    m = make_mux()
    m.submit("policy", act(0.3), 0.0)
    m.submit("teleop", act(-0.7), 0.05)
    d = m.tick(0.1)
    assert d.mode is Mode.HUMAN and d.source == "teleop" and d.label == 2 and d.action[0] == -0.7
    m.submit("policy", act(0.4), 0.2)
    assert m.tick(0.24).source == "teleop"  # 0.19 s old < 0.2 s timeout
    d = m.tick(0.26)  # teleop stale: back to the policy at once, no hysteresis
    assert d.source == "policy" and d.action[0] == 0.4 and d.label == 1


def test_release_hands_back_at_next_tick():
    m = make_mux()
    m.submit("policy", act(0.3), 0.0)
    m.submit("teleop", act(-0.7), 0.01)
    assert m.tick(0.02).source == "teleop"
    m.submit("teleop", [], 0.03)
    d = m.tick(0.04)
    assert d.source == "policy" and m.input_state("teleop", 0.04) == "released"
    assert m.stats("teleop").released == 1


def test_all_stale_holds_zero_motion_and_keeps_gripper():
    m = make_mux()
    d = m.tick(0.0)
    assert d.mode is Mode.HOLD and d.source is None and d.label == 1
    assert d.action.tolist() == act(0.0, g=0.0)  # hold_gripper_value (0.0 here) before any command
    m.submit("policy", act(0.3, g=0.8), 0.0)
    assert m.tick(0.1).mode is Mode.AUTONOMOUS
    d = m.tick(1.0)
    assert d.mode is Mode.HOLD and d.action[:6].tolist() == [0.0] * 6 and d.action[6] == 0.8
    assert "policy: stale" in d.reason and "teleop: never" in d.reason


def test_hold_gripper_value_mode_and_initial_value():
    m = make_mux(hold_gripper="value", hold_gripper_value=-1.0)
    assert m.tick(0.0).action[6] == -1.0
    m.submit("policy", act(0.1, g=1.0), 0.0)
    m.tick(0.1)
    assert m.tick(5.0).action[6] == -1.0
    m2 = make_mux(hold_gripper="keep_last", hold_gripper_value=0.25)
    assert m2.tick(0.0).action[6] == 0.25  # before any command


def test_estop_latches_until_explicit_release():
    m = make_mux()
    m.submit("policy", act(0.3, g=1.0), 0.0)
    m.tick(0.01)
    assert m.engage_estop("button") and not m.engage_estop("again")
    for t in (0.02, 0.03):
        m.submit("policy", act(0.3, g=1.0), t)
        m.submit("teleop", act(0.9, g=1.0), t)
        d = m.tick(t)
        assert d.mode is Mode.ESTOP and d.action[:6].tolist() == [0.0] * 6 and d.action[6] == 1.0
        assert d.label == 1 and "button" in d.reason
    assert m.release_estop() and not m.release_estop()
    assert m.tick(0.04).mode is Mode.HUMAN


def test_rejected_actions_are_counted_and_never_executed():
    m = make_mux()
    m.submit("policy", act(0.3), 0.0)
    assert m.tick(0.01).action[0] == 0.3
    m.submit("policy", act(math.nan), 0.02)
    d = m.tick(0.03)
    assert d.mode is Mode.HOLD and np.all(np.isfinite(d.action))  # the faulty input is dropped at once
    m.submit("policy", [0.1] * 3, 0.04)
    m.submit("policy", act(5.0), 0.05)
    d = m.tick(0.06)
    assert d.action[0] == 1.0
    st = m.stats("policy")
    assert (st.received, st.accepted, st.rejected_nonfinite, st.rejected_dimension, st.clamped) == (4, 2, 1, 1, 1)
    reasons = m.masked_reasons(0.06, d.source)
    assert reasons["policy"] == "driving" and reasons["teleop"] == "no valid action received yet"


def test_masked_reasons():
    m = make_mux()
    m.submit("policy", act(0.1), 0.0)
    m.submit("teleop", act(0.2), 0.0)
    d = m.tick(0.1)
    r = m.masked_reasons(0.1, d.source)
    assert r["teleop"] == "driving" and "masked by higher-priority input teleop" in r["policy"]
    r = m.masked_reasons(0.3, None)
    assert r["teleop"].startswith("stale") and "0.2 s" in r["teleop"]
    m.engage_estop("test")
    assert all("e-stop" in v for v in m.masked_reasons(0.3, None).values())


def test_mux_rejects_ambiguous_setups():
    with pytest.raises(ValueError):
        ActionMux([MuxInput("a", 1, 1.0), MuxInput("b", 1, 1.0)], ActionValidator(LOW, HIGH))
    with pytest.raises(ValueError):
        ActionMux([MuxInput("a", 1, 1.0), MuxInput("a", 2, 1.0)], ActionValidator(LOW, HIGH))


def test_random_inputs_never_produce_unsafe_commands():
    rng = np.random.default_rng(0)
    m = make_mux()
    v = ActionValidator(LOW, HIGH)
    t = 0.0
    specials = [math.nan, math.inf, -math.inf, 1e9, -1e9]
    for _ in range(2000):
        t += rng.uniform(0, 0.1)
        name = "policy" if rng.random() < 0.7 else "teleop"
        n = int(rng.choice([0, 6, 7, 7, 7, 8]))
        a = rng.uniform(-3, 3, size=n)
        if n and rng.random() < 0.2:
            a[rng.integers(n)] = specials[rng.integers(len(specials))]
        m.submit(name, a, t)
        if rng.random() < 0.01:
            m.engage_estop("random")
        if rng.random() < 0.02:
            m.release_estop()
        assert v.is_safe(m.tick(t).action)
    assert m.output_guard_trips == 0
