"""Which episode is being recorded: the recorder's episode state machine, ROS-free and testable.

Fed with the events of ``/apo/episode`` (apo_interfaces/EpisodeEvent), it answers with decisions
the node carries out on its bag writers:

- ``open``: a START for a new episode id.
- ``end``: SUCCESS / FAILURE / ABORT / END for the current episode: the outcome is known, the bag
  stays open for the grace period so the last STEP/COMMAND messages still land in it (they may
  arrive after the end event: different topics are not ordered), then the node calls
  ``grace_expired(id)`` -> ``close``. A START of another episode before an end event ends the
  current one the same way, with outcome ``unknown``. A second end event during the grace period can
  make an ``unknown`` outcome (END) more specific (SUCCESS, ...), never the reverse. Several
  episodes can be in their grace period while the next one is recorded; the node routes steps by
  their episode id.
- ``discard``: the episode topic is latched (transient local), so a recorder that starts late gets
  the recent history. A START stamped before the recorder started means an episode already running
  (it is joined, ``joined_late``); if its end event is also from before the start, the episode was
  already over, and the bag opened for it is thrown away.
- ``ignore``: duplicates, events of other episodes, STARTs of episodes already recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from apo_recorder import contract


@dataclass(frozen=True)
class EpisodeInfo:
    episode_id: str  # as in the events and steps ("" allowed; dir_name is then generated)
    instruction: str = ""
    task: str = ""
    policy_version: str = ""
    stamp_ns: int = 0
    joined_late: bool = False

    def custom_data(self, recorder_version: str, outcome: str = contract.OUTCOME_UNKNOWN,
                    episode_id: str | None = None) -> dict[str, str]:
        return contract.default_custom_data(
            episode_id=self.episode_id if episode_id is None else episode_id, instruction=self.instruction,
            task=self.task, policy_version=self.policy_version, outcome=outcome,
            recorder_version=recorder_version)


@dataclass(frozen=True)
class RecordingDecision:
    kind: str  # open | end | close | discard | ignore
    episode: EpisodeInfo | None = None
    outcome: str = contract.OUTCOME_UNKNOWN
    reason: str = ""


class EpisodeTracker:
    def __init__(self, start_ns: int, remember: int = 4096):
        self.start_ns = int(start_ns)
        self.current: EpisodeInfo | None = None  # the episode being recorded (no end event yet)
        self.ending: dict[str, tuple[EpisodeInfo, str]] = {}  # in their grace period: id -> (info, outcome)
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def _is_history(self, stamp_ns: int) -> bool:
        return 0 < stamp_ns < self.start_ns

    def _mark_finished(self, episode_id: str) -> None:
        self._finished[episode_id] = None
        self._finished.move_to_end(episode_id)
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def finished(self, episode_id: str) -> bool:
        """The episode's bag is closed (or was never recorded): its messages come too late."""
        return episode_id in self._finished

    def on_event(self, episode_id: str, event: int, instruction: str = "", task: str = "",
                 policy_version: str = "", stamp_ns: int = 0) -> list[RecordingDecision]:
        if event == contract.EVENT_START:
            return self._on_start(EpisodeInfo(episode_id, instruction, task, policy_version, int(stamp_ns),
                                              joined_late=self._is_history(int(stamp_ns))))
        if event in contract.END_EVENT_OUTCOME:
            return self._on_end(episode_id, contract.END_EVENT_OUTCOME[event], int(stamp_ns))
        return [RecordingDecision("ignore", reason=f"unknown event {event}")]

    def _on_start(self, info: EpisodeInfo) -> list[RecordingDecision]:
        cur = self.current
        if cur is not None and cur.episode_id == info.episode_id:
            return [RecordingDecision("ignore", cur, reason="duplicate START of the current episode")]
        if info.episode_id in self.ending or self.finished(info.episode_id):
            return [RecordingDecision("ignore", info, reason="START of an episode that has already ended")]
        decisions = []
        if cur is not None:  # never ended: it gets its grace period too, with outcome unknown
            self.ending[cur.episode_id] = (cur, contract.OUTCOME_UNKNOWN)
            decisions.append(RecordingDecision("end", cur, contract.OUTCOME_UNKNOWN,
                                      reason=f"episode {info.episode_id!r} started before it ended"))
        self.current = info
        decisions.append(RecordingDecision("open", info, reason="joined a running episode" if info.joined_late else ""))
        return decisions

    def _on_end(self, episode_id: str, outcome: str, stamp_ns: int) -> list[RecordingDecision]:
        cur = self.current
        if cur is not None and cur.episode_id == episode_id:
            self.current = None
            if cur.joined_late and self._is_history(stamp_ns):
                self._mark_finished(episode_id)
                return [RecordingDecision("discard", cur, outcome, reason="episode had ended before the recorder started")]
            self.ending[episode_id] = (cur, outcome)
            return [RecordingDecision("end", cur, outcome)]
        if episode_id in self.ending:
            info, known = self.ending[episode_id]
            if known == contract.OUTCOME_UNKNOWN and outcome != contract.OUTCOME_UNKNOWN:
                self.ending[episode_id] = (info, outcome)
                return [RecordingDecision("end", info, outcome, reason="outcome refined")]
            return [RecordingDecision("ignore", info, known, reason="second end event")]
        self._mark_finished(episode_id)
        return [RecordingDecision("ignore", None, outcome, reason=f"end of episode {episode_id!r}, which is not recorded")]

    def grace_expired(self, episode_id: str) -> RecordingDecision | None:
        """The grace period after the episode's end is over: close its bag."""
        if episode_id not in self.ending:
            return None
        info, outcome = self.ending.pop(episode_id)
        self._mark_finished(episode_id)
        return RecordingDecision("close", info, outcome)

    def close_all(self) -> list[RecordingDecision]:
        """Stop / shutdown: every open episode is closed now (outcome unknown unless its end event came)."""
        decisions = [self.grace_expired(eid) for eid in list(self.ending)]
        if self.current is not None:
            cur, self.current = self.current, None
            self._mark_finished(cur.episode_id)
            decisions.append(RecordingDecision("close", cur, contract.OUTCOME_UNKNOWN))
        return [d for d in decisions if d is not None]
