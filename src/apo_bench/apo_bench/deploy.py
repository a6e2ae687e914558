"""Lockstep deployment: the deploy graph's decisions run in one process, one control step at a time.

What the ROS graph does with seven processes over DDS, this does in a loop in simulated time, with
the same ROS-free code for every decision:

- the robot: :class:`apo_sim.env.SimEnv` and, for the operator's eyes, :class:`apo_sim.expert.ScriptedExpert`
  (its action and task progress, as the sim node publishes them);
- the policy: ``policy.predict`` on the frame of this step (the policy node);
- the operator: :class:`apo_intervention.operator_logic.SupervisorLogic` decides takeovers and
  handbacks; corrections go through the joystick path a person uses: the expert's action is turned
  into stick positions by the inverse :class:`~apo_intervention.joy_mapping.JoyMapping` and back into
  an action by :class:`~apo_intervention.joy_mapping.JoyTeleopLogic` with the deadman held (the
  scripted operator + joy teleop nodes);
- the arbiter: :class:`apo_intervention.arbiter_core.ArbiterCore` (mux, labels, episodes, limits);
- the recorder: one bag per episode in the recorder's contract (:mod:`apo_bench.episode_bag`).

Differences from the live graph, all deliberate: no transport delay, no dropped frames, and a
proposal is always computed from the current frame (so there is no stale-input HOLD); the same
seed and policy therefore give the same episode every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apo_bench.episode_bag import CdrEncoder, open_episode_bag
from apo_core import topics
from apo_core.bag_contract import SOURCE_HOLD, SOURCE_POLICY, SOURCE_TELEOP
from apo_core.policy import Observation as PolicyObservation
from apo_core.policy import check_camera
from apo_intervention.arbiter_core import ArbiterCore
from apo_intervention.config import ArbiterConfig, JoyMappingConfig, OperatorConfig, assemble_config
from apo_intervention.episodes import Event
from apo_intervention.joy_mapping import JoyMapping, JoyTeleopLogic
from apo_intervention.operator_logic import OperatorObservation, SupervisorLogic
from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert

_SOURCE = {"policy": SOURCE_POLICY, "teleop": SOURCE_TELEOP, None: SOURCE_HOLD}


@dataclass
class EpisodeResult:
    episode_id: str
    seed: int
    outcome: str  # success | failure | abort
    steps: int
    human_steps: int
    takeovers: int
    bag: str = ""
    takeover_reasons: list[str] = field(default_factory=list)


class LockstepDeployment:
    """Deploy ``policy`` on ``env`` with the scripted operator watching; one bag per episode.

    ``operator=False`` runs the policy alone through the same arbiter (no takeovers).
    ``max_steps`` ends an episode as a failure (the arbiter's step limit).
    """

    def __init__(self, env: SimEnv, policy, *, max_steps: int, bags_dir=None, operator: bool = True,
                 operator_config: OperatorConfig | None = None, episode_prefix: str = "ep"):
        check_camera(policy, env.camera, "the deployment's simulator")
        self.env = env
        self.policy = policy
        self.bags_dir = bags_dir
        self.operator_enabled = operator
        self.dt = 1.0 / env.control_freq
        self.arbiter_cfg = assemble_config(ArbiterConfig, overrides={
            "task": env.task, "instruction": env.instruction, "max_episode_steps": int(max_steps),
            "control_rate_hz": float(env.control_freq), "end_on_success": True})
        self.operator_cfg = operator_config or assemble_config(OperatorConfig)
        self.mapping = JoyMapping(assemble_config(JoyMappingConfig, self.operator_cfg.joy_config_file or None))
        self.expert = ScriptedExpert(env.task)
        self.episode_prefix = episode_prefix
        self._encoder = CdrEncoder() if bags_dir is not None else None
        cfg = getattr(policy, "config", None)
        self._use_state = getattr(cfg, "state_dim", 0) > 0

    def run_episode(self, seed: int) -> EpisodeResult:
        episode_id = f"{self.episode_prefix}-s{int(seed):07d}"
        core = ArbiterCore(self.arbiter_cfg, id_factory=lambda: episode_id)
        logic = SupervisorLogic(self.operator_cfg)
        joy = JoyTeleopLogic(self.mapping)
        version = getattr(self.policy, "version", "") or ""
        core.policy_version = version
        obs = self.env.reset(seed=int(seed))
        self.expert.reset()
        self.policy.reset()  # a chunked policy starts the episode with a fresh chunk
        writer = (open_episode_bag(self.bags_dir, episode_id, self.env.instruction, self.env.task, version)
                  if self._encoder is not None else None)
        enc = self._encoder
        t_ns = 0
        last_mode = None
        human_steps = takeovers = 0
        reasons: list[str] = []
        outcome = "abort"

        def write(topic, data):
            if writer is not None:
                writer.write(topic, t_ns, data)

        def publish_events(events):
            nonlocal outcome
            for ev in events:
                write(topics.EPISODE, enc.event(t_ns, ev) if enc else b"")
                if ev.event in (Event.SUCCESS, Event.FAILURE, Event.ABORT):
                    outcome = ev.event.name.lower()

        try:
            ok, message, events = core.start_episode(reason="lockstep deployment")
            if not ok:
                raise RuntimeError(message)
            publish_events(events)
            if self.operator_enabled:
                logic.episode_started()
            step = 0
            while core.episodes.active:
                now = step * self.dt
                t_ns = int(round(now * 1e9)) + 1  # stamps > 0: the converter aligns on header stamps
                state = self.env.task_state()
                expert_action = self.expert.act(state)
                status = self.expert.status(state)
                if enc is not None:
                    write(topics.IMAGE, enc.image(t_ns, obs.image))
                    write(topics.ROBOT_STATE, enc.robot_state(t_ns, obs))
                proposal = self.policy.predict(PolicyObservation(obs.image, self.env.instruction,
                                                                 obs.proprio if self._use_state else None))
                core.submit_policy(proposal, now, version)
                if enc is not None:
                    write(topics.POLICY_ACTION, enc.action(t_ns, proposal, SOURCE_POLICY, version))
                if self.operator_enabled:
                    decision = logic.observe(OperatorObservation(
                        progress=status.progress, object_height=status.object_height, grasped=status.grasped,
                        policy_action=np.asarray(proposal, dtype=np.float64), expert_action=expert_action))
                    if decision.changed and decision.correcting:
                        takeovers += 1
                        reasons.append(decision.reason)
                    teleop = self._joystick(joy, expert_action if logic.correcting else None)
                    if teleop is not None:
                        core.submit_teleop(teleop, now)
                        if enc is not None:
                            write(topics.TELEOP_ACTION, enc.action(t_ns, teleop, SOURCE_TELEOP))
                tick = core.tick(now)
                if enc is not None:
                    d = tick.decision
                    write(topics.COMMAND, enc.action(t_ns, d.action, _SOURCE[d.source],
                                                     version if d.source == "policy" else ""))
                    if (d.mode, d.source) != last_mode:
                        last_mode = (d.mode, d.source)
                        write(topics.MODE, enc.mode(t_ns, d))
                    if tick.step is not None:
                        write(topics.STEP, enc.step(t_ns, tick.step))
                if tick.step is not None and tick.step.label == 2:
                    human_steps += 1
                publish_events(tick.events)
                obs = self.env.step(tick.decision.action)
                step += 1
                t_ns = int(round(step * self.dt * 1e9))
                publish_events(core.on_task_success(bool(obs.success)))
            if self.operator_enabled:
                logic.episode_ended()
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if writer is not None:
            writer.close({"apo.outcome": outcome})
            if writer.failed:
                raise RuntimeError(f"writing the bag of {episode_id} failed: {writer.error}")
        return EpisodeResult(episode_id, int(seed), outcome, core.episodes.steps or step, human_steps, takeovers,
                             str(writer.path) if writer is not None else "", reasons)

    def _joystick(self, joy: JoyTeleopLogic, expert_action) -> np.ndarray | None:
        """What the joy teleop publishes this step: the corrected action, a release (empty), or nothing."""
        if expert_action is not None:
            axes, _ = self.mapping.action_to_axes(expert_action)
            out = joy.update(axes, self.mapping.buttons({"deadman_button": True}))
        else:
            out = joy.update([0.0] * self.mapping.num_axes, self.mapping.buttons({}))
        if out.action is not None:
            return out.action
        if out.release:
            return np.zeros(0)
        return None
