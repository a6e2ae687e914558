"""Keyboard mapping: takeover toggle, motion keys with hold time, sticky gripper, commands."""

import pytest

from apo_intervention.config import KeyboardConfig, assemble_config
from apo_intervention.keyboard import HELP, MOTION_KEYS, KeyboardMapping


def km():
    return KeyboardMapping(assemble_config(KeyboardConfig))


def test_no_action_and_motion_ignored_outside_takeover():
    k = km()
    assert k.action(0.0) is None
    assert k.handle_key("w", 0.0) == ["ignored"]
    assert k.action(0.0) is None


def test_takeover_motion_keys_and_hold_time():
    k = km()
    k.set_gripper(1.0)  # robot currently holding: the takeover must not open the gripper
    assert k.handle_key("t", 0.0) == ["takeover_on"]
    assert k.action(0.0).tolist() == [0, 0, 0, 0, 0, 0, 1.0]
    k.handle_key("w", 1.0)
    k.handle_key("j", 1.0)
    a = k.action(1.05)
    assert a[0] == 0.5 and a[5] == 0.3 and a[6] == 1.0
    assert k.action(1.2)[0] == 0.0  # key_hold_time 0.15 s elapsed
    k.handle_key("s", 2.0)
    k.handle_key(" ", 2.01)
    assert k.action(2.02)[0] == 0.0
    k.set_gripper(-1.0)  # ignored during takeover
    k.handle_key("h", 3.0)
    assert k.action(3.0)[6] == -1.0
    k.handle_key("g", 3.0)
    assert k.action(3.0)[6] == 1.0
    assert k.handle_key("T", 4.0) == ["takeover_off"] and k.action(4.0) is None


@pytest.mark.parametrize("key, dim, sign", [(k, d, s) for k, (d, s) in MOTION_KEYS.items()])
def test_every_motion_key(key, dim, sign):
    k = km()
    k.handle_key("t", 0.0)
    a = k.action(0.0)
    k.handle_key(key, 0.0)
    a = k.action(0.01)
    expected = [0.0] * 7
    expected[dim] = sign * k.speed[dim]
    expected[6] = a[6]
    assert a.tolist() == expected


def test_commands_and_quit_hands_back():
    k = km()
    assert [k.handle_key(c, 0)[0] for c in "nyxbe?"] == ["start", "success", "failure", "abort", "estop", "help"]
    assert k.handle_key("z", 0) == ["unknown"]
    assert k.handle_key("q", 0) == ["quit"]
    k.handle_key("t", 0)
    assert k.handle_key("\x03", 0) == ["takeover_off", "quit"] and not k.takeover
    assert "take over" in HELP and "E-STOP" in HELP
