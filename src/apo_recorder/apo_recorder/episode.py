"""Which episode is being recorded: the recorder's episode state machine, ROS-free and testable.

Fed with the events of ``/apo/episode`` (apo_interfaces/EpisodeEvent), it answers with decisions
the node carries out on its bag writers:

- ``open``: a START for a new episode id. A bag still open for another episode is closed first
  (``close`` with its outcome, ``unknown`` if it never got an end event).
- ``end``: SUCCESS / FAILURE / ABORT / END for the current episode: the outcome is known, the bag
  stays open for the grace period so the last STEP/COMMAND messages still land in it, then the
  node calls ``grace_expired()`` -> ``close``. A second end event during the grace period can make
  an ``unknown`` outcome (END) more specific (SUCCESS, ...), never the reverse.
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
class Decision:
    kind: str  # open | end | close | discard | ignore
    episode: EpisodeInfo | None = None
    outcome: str = contract.OUTCOME_UNKNOWN
    reason: str = ""


class EpisodeTracker:
    def __init__(self, start_ns: int, remember: int = 4096):
        self.start_ns = int(start_ns)
        self.current: EpisodeInfo | None = None
        self.ending = False
        self.outcome = contract.OUTCOME_UNKNOWN
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
        return episode_id in self._finished

    def on_event(self, episode_id: str, event: int, instruction: str = "", task: str = "",
                 policy_version: str = "", stamp_ns: int = 0) -> list[Decision]:
        if event == contract.EVENT_START:
            return self._on_start(EpisodeInfo(episode_id, instruction, task, policy_version, int(stamp_ns),
                                              joined_late=self._is_history(int(stamp_ns))))
        if event in contract.END_EVENT_OUTCOME:
            return self._on_end(episode_id, contract.END_EVENT_OUTCOME[event], int(stamp_ns))
        return [Decision("ignore", reason=f"unknown event {event}")]

    def _on_start(self, info: EpisodeInfo) -> list[Decision]:
        cur = self.current
        if cur is not None and cur.episode_id == info.episode_id:
            return [Decision("ignore", cur, reason="duplicate START of the current episode")]
        if self.finished(info.episode_id):
            return [Decision("ignore", info, reason="START of an episode that has already ended")]
        decisions = []
        if cur is not None:
            decisions.append(Decision("close", cur, self.outcome if self.ending else contract.OUTCOME_UNKNOWN,
                                      reason=f"episode {info.episode_id!r} started"))
            self._mark_finished(cur.episode_id)
        self.current, self.ending, self.outcome = info, False, contract.OUTCOME_UNKNOWN
        decisions.append(Decision("open", info, reason="joined a running episode" if info.joined_late else ""))
        return decisions

    def _on_end(self, episode_id: str, outcome: str, stamp_ns: int) -> list[Decision]:
        cur = self.current
        if cur is None or cur.episode_id != episode_id:
            self._mark_finished(episode_id)
            return [Decision("ignore", cur, outcome, reason=f"end of episode {episode_id!r}, which is not recorded")]
        if cur.joined_late and self._is_history(stamp_ns):
            self.current, self.ending = None, False
            self._mark_finished(episode_id)
            return [Decision("discard", cur, outcome, reason="episode had ended before the recorder started")]
        if not self.ending:
            self.ending, self.outcome = True, outcome
            return [Decision("end", cur, outcome)]
        if self.outcome == contract.OUTCOME_UNKNOWN and outcome != contract.OUTCOME_UNKNOWN:
            self.outcome = outcome
            return [Decision("end", cur, outcome, reason="outcome refined")]
        return [Decision("ignore", cur, self.outcome, reason="second end event")]

    def grace_expired(self) -> Decision | None:
        """The grace period after the end event is over: close the bag."""
        if self.current is None or not self.ending:
            return None
        cur, outcome = self.current, self.outcome
        self.current, self.ending, self.outcome = None, False, contract.OUTCOME_UNKNOWN
        self._mark_finished(cur.episode_id)
        return Decision("close", cur, outcome)

    def pending_outcome(self) -> str:
        """Outcome to record if the bag is closed now (stop service, shutdown)."""
        return self.outcome if self.ending else contract.OUTCOME_UNKNOWN
