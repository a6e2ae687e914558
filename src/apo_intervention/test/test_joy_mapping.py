"""Joystick mapping: deadzone, forward/inverse round trip, deadman, edge-triggered buttons."""

import numpy as np
import pytest

from apo_core.errors import ConfigError
from apo_intervention.config import JoyMappingConfig, assemble_config
from apo_intervention.joy_mapping import JoyMapping, JoyTeleopLogic, apply_deadzone, invert_deadzone


def default_mapping():
    return JoyMapping(assemble_config(JoyMappingConfig))


def test_deadzone_is_continuous_and_invertible():
    dz = 0.1
    assert apply_deadzone(0.05, dz) == 0.0 and apply_deadzone(-0.09, dz) == 0.0
    assert apply_deadzone(1.0, dz) == 1.0 and apply_deadzone(-1.0, dz) == -1.0
    assert apply_deadzone(2.0, dz) == 1.0
    assert apply_deadzone(0.1 + 1e-9, dz) == pytest.approx(0.0, abs=1e-8)
    for y in np.linspace(-1, 1, 41):
        assert apply_deadzone(invert_deadzone(y, dz), dz) == pytest.approx(y, abs=1e-12)


def test_forward_mapping_matches_config():
    m = default_mapping()
    axes = [0.0] * 8
    axes[1], axes[0], axes[4], axes[5] = 1.0, -1.0, 0.5, 1.0  # LY up, LX right, RY half, RT released
    a = m.axes_to_action(axes)
    dz = 0.05
    assert a[0] == 1.0 and a[1] == -1.0 and a[2] == pytest.approx((0.5 - dz) / (1 - dz))
    assert a[6] == -1.0  # trigger released = open
    axes[5] = -1.0
    assert m.axes_to_action(axes)[6] == 1.0
    with pytest.raises(ValueError, match="axes"):
        m.axes_to_action([0.0] * 3)


def test_inverse_round_trip_and_saturation():
    m = default_mapping()
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = rng.uniform(-1, 1, 7)
        axes, sat = m.action_to_axes(a)
        assert sat == [] and len(axes) == m.num_axes and all(-1 <= x <= 1 for x in axes)
        assert np.allclose(m.axes_to_action(axes), a, atol=1e-12)
    axes, sat = m.action_to_axes([2.0, 0, 0, 0, 0, 0, 0])
    assert sat == [0] and m.axes_to_action(axes)[0] == 1.0


def test_offsets_scales_and_unmapped_dimensions():
    cfg = assemble_config(JoyMappingConfig, overrides={"axis": [0, 1, -1, -1, -1, -1, 2],
                                                       "scale": [0.5, -2.0, 1, 1, 1, 1, 1],
                                                       "offset": [0.1, 0, 0.3, 0, 0, 0, 0], "deadzone": 0.0})
    m = JoyMapping(cfg)
    a = m.axes_to_action([1.0, 0.5, 0.0])
    assert a.tolist() == pytest.approx([0.6, -1.0, 0.3, 0, 0, 0, 0])
    axes, sat = m.action_to_axes([0.35, 0.5, 0.3, 0.0, 0.2, 0, 0])
    assert axes == pytest.approx([0.5, -0.25, 0.0]) and sat == [4]


def test_deadman_release_and_button_edges():
    m = default_mapping()
    logic = JoyTeleopLogic(m)
    axes = [0.0] * 8
    axes[1] = 0.5
    idle = m.buttons()
    out = logic.update(axes, idle)
    assert out.action is None and not out.release and out.episode_commands == []
    held = m.buttons({"deadman_button": True})
    out = logic.update(axes, held)
    assert out.action is not None and out.action[0] > 0
    out = logic.update(axes, idle)
    assert out.action is None and out.release
    assert not logic.update(axes, idle).release  # once only
    start = m.buttons({"start_button": True})
    assert logic.update(axes, start).episode_commands == ["start"]
    assert logic.update(axes, start).episode_commands == []  # held: no repeat
    logic.update(axes, idle)
    assert logic.update(axes, start).episode_commands == ["start"]
    both = m.buttons({"success_button": True, "estop_button": True})
    out = logic.update(axes, both)
    assert out.episode_commands == ["success"] and out.estop
    assert logic.update(axes, [0, 0]).episode_commands == []  # short buttons array = released


def test_deadman_with_missing_axes_reports_problem():
    m = default_mapping()
    logic = JoyTeleopLogic(m)
    out = logic.update([0.0, 0.0], m.buttons({"deadman_button": True}))
    assert out.action is None and "axes" in out.problem


@pytest.mark.parametrize("override, key", [
    ({"axis": [1, 1, 4, 6, 7, 3, 5]}, "axis[1]"),
    ({"scale": [1.0] * 6}, "scale"),
    ({"start_button": 4}, "start_button"),
    ({"deadzone": 1.0}, "deadzone"),
    ({"deadman_button": -1}, "deadman_button"),
    ({"deadmann_button": 3}, "deadmann_button"),
    ({"scale": [1, 1, 1, 1, 1, 1, "x"]}, "scale[6]"),
])
def test_bad_joy_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        assemble_config(JoyMappingConfig, overrides=override)
