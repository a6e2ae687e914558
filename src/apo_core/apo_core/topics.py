"""Names and QoS of the deploy graph (docs/ARCHITECTURE.md, "Topic graph"), in one place for every node, test and tool.

Kept ROS-free: QoS is described by plain values here and turned into rclpy profiles by
``qos_profile(name)`` in the nodes' shared helper (apo_core stays importable without ROS).
"""

from __future__ import annotations

# Robot driver (apo_sim or a real arm). A real driver may use other names: remap or set parameters.
IMAGE = "/apo/camera/image_raw"  # sensor_msgs/Image, rgb8, upright, sensor-data QoS
ROBOT_STATE = "/apo/robot_state"  # apo_interfaces/RobotState, reliable
# Policy
POLICY_ACTION = "/apo/policy_action"  # apo_interfaces/ActionCommand
# Human input
JOY = "/joy"  # sensor_msgs/Joy
TELEOP_ACTION = "/apo/teleop_action"  # apo_interfaces/ActionCommand (from joystick / keyboard mapping)
# Arbiter outputs
COMMAND = "/apo/command"  # apo_interfaces/ActionCommand, executed by the robot driver
STEP = "/apo/step"  # apo_interfaces/LabelledStep
MODE = "/apo/mode"  # apo_interfaces/InterventionMode, latched (transient local)
EPISODE = "/apo/episode"  # apo_interfaces/EpisodeEvent, reliable + transient local
ESTOP = "/apo/estop"  # std_msgs/Bool, true latches the e-stop (release through the service)
DIAGNOSTICS = "/diagnostics"  # diagnostic_msgs/DiagnosticArray
# The policy node's DiagnosticStatus.hardware_id there; its values carry the loaded model under "version".
POLICY_DIAGNOSTICS_ID = "policy"
# Simulation only: privileged information the scripted operator uses in place of human eyes.
SIM_EXPERT_ACTION = "/apo/sim/expert_action"  # apo_interfaces/ActionCommand (expert's action now)
SIM_TASK_PROGRESS = "/apo/sim/task_progress"  # std_msgs/Float64MultiArray [progress, object_height, grasped]

# Services
EPISODE_CONTROL = "/apo/episode/control"  # apo_interfaces/EpisodeControl (owned by the arbiter)
ESTOP_SERVICE = "/apo/arbiter/set_estop"  # std_srvs/SetBool
LOAD_POLICY = "/apo/policy/load"  # apo_interfaces/LoadPolicy
RECORDER_START = "/apo/recorder/start"  # std_srvs/Trigger
RECORDER_STOP = "/apo/recorder/stop"  # std_srvs/Trigger
RECORDER_PAUSE = "/apo/recorder/pause"  # std_srvs/SetBool (true = pause)
RETRAIN = "/apo/retrain"  # apo_interfaces/Retrain
RETRAIN_STATUS = "/apo/retrain/get_status"  # apo_interfaces/GetRetrainStatus
RETRAIN_STATUS_TOPIC = "/apo/retrain/status"  # apo_interfaces/RetrainStatus, latched
RETRAIN_CANCEL = "/apo/retrain/cancel"  # apo_interfaces/CancelRetrain
RETRAIN_ROLLBACK = "/apo/retrain/rollback"  # apo_interfaces/Rollback

# QoS classes: "sensor" = best effort, keep last 1 (newest frame wins; never queue stale frames);
# "reliable" = reliable, keep last N; "latched" = reliable + transient local, keep last N.
QOS = {
    IMAGE: ("sensor", 1),
    ROBOT_STATE: ("reliable", 10),
    POLICY_ACTION: ("reliable", 10),
    JOY: ("reliable", 10),
    TELEOP_ACTION: ("reliable", 10),
    COMMAND: ("reliable", 10),
    STEP: ("reliable", 200),  # what subscribers ask; the arbiter offers STEP_OFFERED (below)
    MODE: ("latched", 1),
    EPISODE: ("latched", 20),
    ESTOP: ("reliable", 10),
    SIM_EXPERT_ACTION: ("reliable", 10),
    SIM_TASK_PROGRESS: ("reliable", 10),
    RETRAIN_STATUS_TOPIC: ("latched", 1),
    DIAGNOSTICS: ("reliable", 10),
}

# The arbiter (and the bag replay) offer /apo/step transient local with the same depth: a recorder whose
# subscription matches after an episode started still gets that episode's first steps. Volatile
# subscribers (the default above) match it too; the recorder asks for transient local only when every
# publisher offers it.
STEP_OFFERED = ("latched", QOS[STEP][1])
