"""The episode bag contract, stated once: what a recorded episode bag holds and how its facts are read.

ROS-free (plain Python; imports nothing from rclpy, apo_interfaces or another apo package), so the
recorder, the bag readers, conversion, analysis, the arbiter's bookkeeping and the retrain job all
import these facts from here instead of restating them:

- the topics of an episode bag and their ROS 2 message type names (:data:`EPISODE_BAG_TOPICS`);
- the bag layout constants (rosbag2 metadata version, storage, the recorder's journal file name);
- the ``custom_data`` keys of ``metadata.yaml`` (``apo.*``, all values strings) and the outcome names;
- the ``apo_interfaces`` message constants the bag and the services carry, mirrored as plain ints:
  ``EpisodeEvent.EVENT_*``, ``InterventionMode.MODE_*`` (defined in :mod:`apo_core.labels`,
  re-exported here) and ``RetrainStatus.STATE_*``; ``test_bag_contract.py`` checks every value
  against the generated interfaces;
- the event -> outcome map (:data:`OUTCOME_OF_EVENT`, total over the event codes);
- :func:`episode_facts`: the one rule deriving an episode's id, instruction, task, policy version and
  outcome from its custom data, its episode events and its steps (conversion and analysis both use it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from apo_core import topics
from apo_core.labels import MODE_AUTONOMOUS, MODE_ESTOP, MODE_HOLD, MODE_HUMAN, MODES  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------------------------
# Layout of one episode bag
# --------------------------------------------------------------------------------------------
SCHEMA_VERSION = "1"  # value of apo.schema_version
METADATA_VERSION = 9  # rosbag2 metadata.yaml version
STORAGE_ID = "mcap"
# The recorder's journal: present in the bag directory while the bag is written, left by a killed recorder.
JOURNAL_NAME = "apo_recording.yaml"

# ROS 2 message type names.
TYPE_IMAGE = "sensor_msgs/msg/Image"
TYPE_JOY = "sensor_msgs/msg/Joy"
TYPE_ROBOT_STATE = "apo_interfaces/msg/RobotState"
TYPE_ACTION_COMMAND = "apo_interfaces/msg/ActionCommand"
TYPE_LABELLED_STEP = "apo_interfaces/msg/LabelledStep"
TYPE_EPISODE_EVENT = "apo_interfaces/msg/EpisodeEvent"
TYPE_INTERVENTION_MODE = "apo_interfaces/msg/InterventionMode"

# What an episode bag records (the recorder's default): topic -> ROS 2 type name.
EPISODE_BAG_TOPICS: dict[str, str] = {
    topics.IMAGE: TYPE_IMAGE,
    topics.ROBOT_STATE: TYPE_ROBOT_STATE,
    topics.POLICY_ACTION: TYPE_ACTION_COMMAND,
    topics.TELEOP_ACTION: TYPE_ACTION_COMMAND,
    topics.COMMAND: TYPE_ACTION_COMMAND,
    topics.STEP: TYPE_LABELLED_STEP,
    topics.EPISODE: TYPE_EPISODE_EVENT,
    topics.MODE: TYPE_INTERVENTION_MODE,
    topics.JOY: TYPE_JOY,
}

# custom_data keys in metadata.yaml (all values are strings).
KEY_EPISODE_ID = "apo.episode_id"
KEY_INSTRUCTION = "apo.instruction"
KEY_TASK = "apo.task"
KEY_OUTCOME = "apo.outcome"
KEY_POLICY_VERSION = "apo.policy_version"
KEY_SCHEMA_VERSION = "apo.schema_version"
KEY_RECORDER_VERSION = "apo.recorder_version"
CUSTOM_DATA_KEYS = (KEY_EPISODE_ID, KEY_INSTRUCTION, KEY_TASK, KEY_OUTCOME, KEY_POLICY_VERSION,
                    KEY_SCHEMA_VERSION, KEY_RECORDER_VERSION)
# Only present in bags rebuilt by recover_bag: number of messages recovered (as a string).
KEY_RECOVERED = "apo.recovered"

# Episode outcomes (apo.outcome, and the dataset's ``outcome`` attribute).
OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_ABORT = "abort"
OUTCOME_UNKNOWN = "unknown"
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_ABORT, OUTCOME_UNKNOWN)

# --------------------------------------------------------------------------------------------
# apo_interfaces constants (mirrored; checked against the generated interfaces by the tests)
# --------------------------------------------------------------------------------------------
# EpisodeEvent.EVENT_*
EVENT_START = 0
EVENT_END = 1
EVENT_SUCCESS = 2
EVENT_FAILURE = 3
EVENT_ABORT = 4
EVENT_CODES = (EVENT_START, EVENT_END, EVENT_SUCCESS, EVENT_FAILURE, EVENT_ABORT)


class EpisodeEventCode(IntEnum):
    """The EpisodeEvent codes as an enum (``apo_intervention.episodes.Event``)."""

    START = EVENT_START
    END = EVENT_END
    SUCCESS = EVENT_SUCCESS
    FAILURE = EVENT_FAILURE
    ABORT = EVENT_ABORT


# ActionCommand.SOURCE_*: who produced an action (the lockstep deployment writes them without ROS).
SOURCE_POLICY = 0
SOURCE_TELEOP = 1
SOURCE_EXPERT = 2
SOURCE_HOLD = 3
SOURCE_CODES = (SOURCE_POLICY, SOURCE_TELEOP, SOURCE_EXPERT, SOURCE_HOLD)

# InterventionMode.MODE_*: defined in apo_core.labels (the K-window needs them) and re-exported here
# (MODE_AUTONOMOUS, MODE_HUMAN, MODE_HOLD, MODE_ESTOP, MODES).

# RetrainStatus.STATE_*: name (as the retrain job writes it) -> code.
RETRAIN_STATES: dict[str, int] = {"idle": 0, "queued": 1, "converting": 2, "training": 3, "evaluating": 4,
                                  "promoting": 5, "succeeded": 6, "failed": 7, "cancelled": 8, "rejected": 9}
# States in which a job is still running (it can be cancelled; another request is refused).
RETRAIN_ACTIVE_STATES = frozenset({"queued", "converting", "training", "evaluating", "promoting"})

# --------------------------------------------------------------------------------------------
# Events -> outcome
# --------------------------------------------------------------------------------------------
# Every event code -> the outcome it states: None for START (no outcome), "unknown" for a bare END
# (the episode ended without a success/failure/abort, e.g. the recorder was stopped).
OUTCOME_OF_EVENT: dict[int, str | None] = {
    EVENT_START: None,
    EVENT_END: OUTCOME_UNKNOWN,
    EVENT_SUCCESS: OUTCOME_SUCCESS,
    EVENT_FAILURE: OUTCOME_FAILURE,
    EVENT_ABORT: OUTCOME_ABORT,
}
# The events that end an episode (the recorder closes the bag) and the outcome each one stands for.
END_EVENT_OUTCOME: dict[int, str] = {e: o for e, o in OUTCOME_OF_EVENT.items() if o is not None}
# The events that decide an outcome (success / failure / abort) -> that outcome.
OUTCOME_EVENTS: dict[int, str] = {e: o for e, o in OUTCOME_OF_EVENT.items() if o not in (None, OUTCOME_UNKNOWN)}
# ... and back: outcome -> the event that states it.
EVENT_OF_OUTCOME: dict[str, int] = {o: e for e, o in OUTCOME_EVENTS.items()}


@dataclass(frozen=True)
class EpisodeFacts:
    """What :func:`episode_facts` derived; ``notes`` say where the data were incomplete or disagreed."""

    episode_id: str
    instruction: str
    task: str
    policy_version: str  # "" when nothing names one
    outcome: str  # one of OUTCOMES
    outcome_source: str  # "custom_data", "events" or "none"
    notes: tuple[str, ...] = ()


def episode_facts(custom_data: Mapping[str, str] | None, events: Iterable = (), *, first_episode_id: str = "",
                  step_policy_versions: Iterable[str] | Mapping[str, int] = (),
                  default_episode_id: str = "") -> EpisodeFacts:
    """An episode's id, instruction, task, policy version and outcome: the one rule for every reader.

    ``custom_data``: the bag's ``apo.*`` custom data (metadata.yaml, else the recorder's journal, else
    the MCAP metadata record; empty when there is none). ``events``: the bag's EpisodeEvent messages in
    log order (anything with ``event``, ``episode_id``, ``instruction``, ``task``, ``policy_version``).
    ``first_episode_id``: the episode id of the first EpisodeEvent or LabelledStep message that carries
    one. ``step_policy_versions``: the steps' policy versions (or a version -> count mapping).
    ``default_episode_id``: the last resort (the bag directory name).

    Rules (a value from the custom data always wins when present and non-empty):

    - episode id: ``apo.episode_id``, else ``first_episode_id``, else the first event naming one, else
      ``default_episode_id``;
    - instruction / task: custom data, else the START event's, else the first event carrying one;
    - policy version: custom data, else the last event naming one (the arbiter's outcome and END
      events state the version the episode's policy steps ran; START's can be stale after a model
      swap), else the version most of the steps carry;
    - outcome: ``apo.outcome`` if it is a *known* outcome (success / failure / abort); else the last
      success / failure / abort event; else ``"unknown"``. An ``apo.outcome`` that is not one of
      :data:`OUTCOMES` is noted and ignored; one that contradicts the last outcome event is kept and
      noted (the recorder writes it from the same events, so a contradiction means the bag was edited).

    Why this outcome rule: it is the one conversion documented and tested (``convert.py``: "outcome =
    the last success/failure/abort event" when the custom data has none). Analysis (``summarise_bag``)
    used to take any non-empty ``apo.outcome`` verbatim, so a bag whose custom data says ``"unknown"``
    (the journal of a killed recording, written before the outcome event arrived; a recovered bag)
    but whose events hold a SUCCESS was "success" in the HDF5 file and "unknown" in the report, and a
    garbage ``apo.outcome`` went into the report unchecked. ``"unknown"`` states the *absence* of an
    outcome, so it must not hide one the events do state.
    """
    custom = {str(k): v for k, v in (custom_data or {}).items() if isinstance(v, str)}
    events = list(events)
    notes: list[str] = []
    start = next((e for e in events if e.event == EVENT_START), None)

    episode_id = (custom.get(KEY_EPISODE_ID) or first_episode_id
                  or next((e.episode_id for e in events if e.episode_id), "") or default_episode_id)

    def from_events(field: str) -> str:
        return (getattr(start, field) if start is not None else "") or next(
            (getattr(e, field) for e in events if getattr(e, field)), "")

    instruction = custom.get(KEY_INSTRUCTION) or from_events("instruction")
    task = custom.get(KEY_TASK) or from_events("task")
    versions = Counter(step_policy_versions)
    versions.pop("", None)
    policy_version = (custom.get(KEY_POLICY_VERSION)
                      or next((e.policy_version for e in reversed(events) if e.policy_version), "")
                      or (versions.most_common(1)[0][0] if versions else ""))

    stated = custom.get(KEY_OUTCOME, "")
    if stated and stated not in OUTCOMES:
        notes.append(f"{KEY_OUTCOME} {stated!r} is not one of {OUTCOMES}; using the episode events")
        stated = ""
    terminal = [OUTCOME_EVENTS[e.event] for e in events if e.event in OUTCOME_EVENTS]
    event_outcome = terminal[-1] if terminal else ""
    if stated and stated != OUTCOME_UNKNOWN:
        outcome, source = stated, "custom_data"
        if event_outcome and event_outcome != stated:
            notes.append(f"{KEY_OUTCOME} {stated!r} disagrees with the last episode event ({event_outcome!r})")
    elif event_outcome:
        outcome, source = event_outcome, "events"
    else:
        outcome, source = OUTCOME_UNKNOWN, "none"
        if not custom:
            notes.append("no outcome recorded (no custom data and no success/failure/abort event): 'unknown'")

    ids = {e.episode_id for e in events if e.episode_id}
    if ids - {episode_id}:
        notes.append(f"episode events name other episode id(s) {sorted(ids - {episode_id})}")
    if custom.get(KEY_SCHEMA_VERSION) not in (None, "", SCHEMA_VERSION):
        notes.append(f"{KEY_SCHEMA_VERSION} {custom.get(KEY_SCHEMA_VERSION)!r} (this reader knows {SCHEMA_VERSION})")
    return EpisodeFacts(episode_id=episode_id, instruction=instruction, task=task, policy_version=policy_version,
                        outcome=outcome, outcome_source=source, notes=tuple(notes))
