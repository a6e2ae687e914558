"""config/deploy.yaml per task and robot: every task:= choice resolves, and its nodes' parameters load
into their schemas with the task's own instruction and episode limit; the retrain service gets the
promotion gate of the robot (no ROS needed)."""

import pytest
import yaml

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from apo_core.config import load_config
from apo_core.tasks import TASK_DEFAULTS
from apo_intervention.config import ArbiterConfig, assemble_config
from apo_retrain.node_config import RetrainNodeConfig
from apo_sim.env import TASKS
from apo_sim.node_config import SimNodeConfig
from apo_trainer.retrain.settings import load_retrain_settings


def _specs(**args):
    return {s.name: s for s in resolve_graph(load_graph_file(default_graph_path()), args)}


def test_every_task_choice_is_a_simulated_task_with_defaults():
    choices = load_graph_file(default_graph_path()).arguments["task"].choices
    assert "PickPlaceCan" in choices
    assert set(choices) <= set(TASKS) and set(choices) <= set(TASK_DEFAULTS)


@pytest.mark.parametrize("task, instruction, steps", [
    ("PickPlaceCan", "put the can in the bin on the right", 250),
    ("Lift", "lift the red cube", 150),
    ("Stack", "stack the red cube on the green cube", 250),
])
def test_deploy_graph_with_task_uses_its_instruction_and_step_limit(task, instruction, steps):
    specs = _specs(task=task)
    sim = load_config(SimNodeConfig, dict(specs["apo_sim"].parameters))
    assert sim.task == task and sim.instruction == instruction
    arbiter = assemble_config(ArbiterConfig, overrides=dict(specs["apo_arbiter"].parameters))
    assert arbiter.task == task
    assert arbiter.effective_instruction() == instruction == TASKS[task].instruction
    assert arbiter.effective_max_episode_steps() == steps == TASKS[task].max_episode_steps
    # given values still win
    specs = _specs(task=task, instruction="do it", max_episode_steps=77)
    arbiter = assemble_config(ArbiterConfig, overrides=dict(specs["apo_arbiter"].parameters))
    assert (arbiter.effective_instruction(), arbiter.effective_max_episode_steps()) == ("do it", 77)


def test_real_robot_graph_with_pickplacecan_has_no_simulator():
    specs = _specs(robot="real", task="PickPlaceCan")
    assert "apo_sim" not in specs and "apo_scripted_operator" not in specs
    arbiter = assemble_config(ArbiterConfig, overrides=dict(specs["apo_arbiter"].parameters))
    assert arbiter.effective_instruction() == "put the can in the bin on the right"


def test_shipped_retrain_yaml_and_deploy_graph_choose_the_gate_per_robot():
    path = default_graph_path()
    shipped = yaml.safe_load((path.parent / "retrain.yaml").read_text())
    assert shipped["eval"]["gate"] == "auto" and shipped["robot"] == "real" and shipped["reference"] == "previous"
    for robot, gate in (("sim", "sim_success_rate"), ("real", "heldout_l1")):
        for task in ("Lift", "PickPlaceCan"):
            spec = next(s for s in resolve_graph(load_graph_file(path), {"robot": robot, "task": task})
                        if s.name == "apo_retrain")
            node = load_config(RetrainNodeConfig, dict(spec.parameters))
            settings = load_retrain_settings(node.config_file, node.settings_overrides())
            assert settings.robot == robot and settings.eval.effective_gate(settings.robot) == gate
            # the graph's max_episode_steps -1 (the task's limit) leaves the file's 0, the task's limit too
            assert settings.eval.sim_task == task and settings.eval.sim_max_steps == 0
    spec = next(s for s in resolve_graph(load_graph_file(path), {"max_episode_steps": 60}) if s.name == "apo_retrain")
    node = load_config(RetrainNodeConfig, dict(spec.parameters))
    assert load_retrain_settings(node.config_file, node.settings_overrides()).eval.sim_max_steps == 60
