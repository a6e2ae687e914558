"""Config schemas: shipped YAMLs = documented defaults, strict keys/types, overrides, params files."""

import dataclasses

import pytest
import yaml

from apo_core.errors import ConfigError
from apo_intervention.config import (
    CONFIG_FILES,
    ArbiterConfig,
    OperatorConfig,
    assemble_config,
    default_config_path,
    nest_dotted,
)


@pytest.mark.parametrize("cls", list(CONFIG_FILES))
def test_shipped_yaml_is_complete_and_equals_defaults(cls):
    path = default_config_path(cls)
    data = yaml.safe_load(path.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(cls)}, "document every key in the shipped file"
    assert assemble_config(cls) == cls()


@pytest.mark.parametrize("overrides, needle", [
    ({"control_rate_hz": "fast"}, "control_rate_hz"),
    ({"contrl_rate_hz": 10.0}, "contrl_rate_hz"),
    ({"teleop": {"timeoutt": 1.0}}, "teleop.timeoutt"),
    ({"teleop.timeout": -1.0}, "teleop.timeout"),
    ({"teleop.priority": 5}, "teleop.priority"),
    ({"action_low": [-1.0] * 6}, "action_low"),
    ({"action_low": [0.1] + [-1.0] * 6}, "must contain 0"),
    ({"hold_gripper": "drop"}, "hold_gripper"),
    ({"hold_gripper_value": 3.0}, "hold_gripper_value"),
    ({"timeout_outcome": "success"}, "timeout_outcome"),
    ({"episode_id_prefix": "a/b"}, "episode_id_prefix"),
    ({"max_episode_steps": 1.5}, "max_episode_steps"),
])
def test_bad_arbiter_config_names_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        assemble_config(ArbiterConfig, overrides=overrides)


def test_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "arb.yaml"
    bad.write_text("policy:\n  priorty: 3\n")
    with pytest.raises(ConfigError, match=r"arb\.yaml.*policy\.priorty.*did you mean 'priority'"):
        assemble_config(ArbiterConfig, bad)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        assemble_config(ArbiterConfig, tmp_path / "nope.yaml")


def test_ros_params_file_is_unwrapped_and_overrides_merge(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("apo_arbiter:\n  ros__parameters:\n    control_rate_hz: 50\n    teleop:\n      timeout: 0.3\n")
    cfg = assemble_config(ArbiterConfig, f, {"policy.timeout": 1, "task": "Stack"})
    assert cfg.control_rate_hz == 50.0 and cfg.teleop.timeout == 0.3 and cfg.teleop.priority == 100
    assert cfg.policy.timeout == 1.0 and cfg.task == "Stack"


def test_nest_dotted():
    assert nest_dotted({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    with pytest.raises(ConfigError, match="a.b"):
        nest_dotted({"a": 1, "a.b": 2})


def test_operator_config_checks():
    with pytest.raises(ConfigError, match="max_correction_steps"):
        assemble_config(OperatorConfig, overrides={"min_correction_steps": 50, "max_correction_steps": 10})
    with pytest.raises(ConfigError, match="stall_steps"):
        assemble_config(OperatorConfig, overrides={"stall_steps": 0})


def test_task_defaults_resolve_an_empty_instruction_and_step_limit_minus_one():
    cfg = assemble_config(ArbiterConfig, overrides={"task": "Stack", "instruction": "", "max_episode_steps": -1})
    assert cfg.effective_instruction() == "stack the red cube on the green cube"
    assert cfg.effective_max_episode_steps() == 250
    assert cfg.instruction == "" and cfg.max_episode_steps == -1  # the config keeps what was given
    cfg = assemble_config(ArbiterConfig, overrides={"task": "Lift", "instruction": "lift it", "max_episode_steps": 0})
    assert (cfg.effective_instruction(), cfg.effective_max_episode_steps()) == ("lift it", 0)  # 0: no limit
    # a real robot's task has no defaults: both must be given, and the start fails naming the missing one
    with pytest.raises(ConfigError, match="instruction: task 'WipeTable' has no default"):
        assemble_config(ArbiterConfig, overrides={"task": "WipeTable"})
    with pytest.raises(ConfigError, match="max_episode_steps: task 'WipeTable' has no default"):
        assemble_config(ArbiterConfig, overrides={"task": "WipeTable", "instruction": "wipe", "max_episode_steps": -1})
    cfg = assemble_config(ArbiterConfig, overrides={"task": "WipeTable", "instruction": "wipe the table"})
    assert cfg.effective_max_episode_steps() == 300
    for bad, needle in (({"max_episode_steps": -2}, "max_episode_steps"), ({"instruction": "  "}, "blank")):
        with pytest.raises(ConfigError, match=needle):
            assemble_config(ArbiterConfig, overrides=bad)


def test_intervention_modules_do_not_import_the_simulator():
    import subprocess
    import sys

    code = ("import sys, apo_intervention.arbiter_core, apo_intervention.config, apo_intervention.arbiter_node; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('apo_sim', 'robosuite', 'mujoco')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
