"""Streaming alignment of labelled steps with the observations the policy had at that step.

The rule (used by conversion and documented in the conversion docs):

- every STEP becomes one sample; for each observation topic (camera image, robot state) the
  sample takes the **newest message stamped at or before the step**;
- "stamped" compares the header stamps of the step and the observation when both are set
  (non-zero), and the recorder's log times (receive times) of both otherwise;
- among equal stamps the later-received message wins;
- an observation may reach the recorder after its step (network or executor delay): messages
  received up to ``max_lateness`` (log time) after the step are still considered. A step is
  therefore decided once the bag has been read ``max_lateness`` past it, or at the end;
- a topic with no message at or before the step gives ``None`` (the caller decides: conversion
  drops such steps and reports them);
- when the reader lost messages (a damaged chunk), a step whose choice could have been one of them
  (:meth:`AlignedStep.exposure` overlaps the lost log-time range) is not trustworthy: conversion
  drops it rather than pair it with an older observation.

Memory stays bounded: pending steps cover at most ``max_lateness`` of log time; of the
observations received more than ``max_lateness`` before the oldest undecided step only the newest
is kept, and an observation is forgotten once a newer one was chosen for a step. Both assume
that stamps and receive times agree within ``max_lateness`` and that step stamps do not go
backwards; a hard cap per topic backs this up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_MAX_LATENESS_S = 1.0
MAX_BUFFERED = 600  # per topic; a safety cap, far above max_lateness at camera rates


@dataclass
class Stamped:
    """A message with its header stamp (ns, 0 if unset), log time (ns) and payload."""

    stamp: int
    log_time: int
    value: object
    seq: int = 0  # arrival order


def _keys(obs: Stamped, ref: Stamped) -> tuple[int, int]:
    """(observation time, reference time) on a common clock: stamps if both set, else log times."""
    if obs.stamp and ref.stamp:
        return obs.stamp, ref.stamp
    return obs.log_time, ref.log_time


class LatestAtOrBefore:
    """The buffered messages of one observation topic."""

    def __init__(self, cap: int = MAX_BUFFERED):
        self.buf: deque[Stamped] = deque()
        self.cap = cap
        self.seen = 0

    def add(self, obs: Stamped) -> None:
        self.seen += 1
        self.buf.append(obs)
        if len(self.buf) > self.cap:
            self.buf.popleft()

    def pick(self, step: Stamped) -> Stamped | None:
        best = None
        best_key = None
        for obs in self.buf:
            t_obs, t_ref = _keys(obs, step)
            if t_obs <= t_ref and (best_key is None or (t_obs, obs.seq) >= best_key):
                best, best_key = obs, (t_obs, obs.seq)
        if best is not None:
            self._forget_older_than(best)
        return best

    def trim(self, horizon: int) -> None:
        """Of the messages received before log time ``horizon``, keep only the newest."""
        buf = self.buf
        if len(buf) < 2 or buf[1].log_time >= horizon:
            return
        old = []
        while buf and buf[0].log_time < horizon:
            old.append(buf.popleft())
        newest = old[0]
        for obs in old[1:]:
            t_obs, t_newest = _keys(obs, newest)
            if (t_obs, obs.seq) > (t_newest, newest.seq):
                newest = obs
        buf.appendleft(newest)

    def _forget_older_than(self, chosen: Stamped) -> None:
        keep = deque()
        for obs in self.buf:
            t_obs, t_chosen = _keys(obs, chosen)
            if obs is chosen or t_obs > t_chosen or (t_obs == t_chosen and obs.seq > chosen.seq):
                keep.append(obs)
        self.buf = keep


@dataclass
class AlignedStep:
    step: Stamped
    observations: dict[str, Stamped | None] = field(default_factory=dict)

    def exposure(self, lateness_ns: int) -> tuple[int, int]:
        """Log-time interval [lo, hi] in which a message lost from the bag could have changed this
        step's observations (so a damaged stretch overlapping it makes the sample untrustworthy).

        A lost message M would have been chosen over the chosen observation O if M was newer than O
        and at or before the step. With log times that means O.log_time < M.log_time <= step.log_time;
        with header stamps M.stamp > O.stamp, and M must have arrived within the lateness window, so
        under the rule's assumption |stamp - log time| <= lateness:
        O.stamp - lateness < M.log_time <= step.log_time + lateness. Topics without an observation
        give no bound (the caller drops or keeps such steps by its own rule).
        """
        lo = hi = self.step.log_time
        for obs in self.observations.values():
            if obs is None:
                continue
            if obs.stamp and self.step.stamp:
                lo = min(lo, obs.stamp - lateness_ns)
                hi = max(hi, self.step.log_time + lateness_ns)
            else:
                lo = min(lo, obs.log_time)
        return lo, hi


class StepAligner:
    """Feed messages in log-time order; get steps back with their observations, in step order."""

    def __init__(self, observation_topics, max_lateness_s: float = DEFAULT_MAX_LATENESS_S):
        if max_lateness_s < 0:
            raise ValueError(f"max_lateness must be >= 0 seconds, got {max_lateness_s}")
        self.topics = {t: LatestAtOrBefore() for t in observation_topics}
        self.lateness_ns = int(round(max_lateness_s * 1e9))
        self.pending: deque[Stamped] = deque()
        self._seq = 0

    def add_observation(self, topic: str, stamp: int, log_time: int, value) -> None:
        self._seq += 1
        self.topics[topic].add(Stamped(stamp, log_time, value, self._seq))

    def add_step(self, stamp: int, log_time: int, value) -> None:
        self._seq += 1
        self.pending.append(Stamped(stamp, log_time, value, self._seq))

    def ready(self, now_log_time: int) -> list[AlignedStep]:
        """Steps whose lateness window has passed at log time ``now_log_time``."""
        out = []
        while self.pending and self.pending[0].log_time + self.lateness_ns < now_log_time:
            out.append(self._decide(self.pending.popleft()))
        horizon = (self.pending[0].log_time if self.pending else now_log_time) - self.lateness_ns
        for buf in self.topics.values():
            buf.trim(horizon)
        return out

    def finish(self) -> list[AlignedStep]:
        out = [self._decide(s) for s in self.pending]
        self.pending.clear()
        return out

    def _decide(self, step: Stamped) -> AlignedStep:
        return AlignedStep(step, {t: buf.pick(step) for t, buf in self.topics.items()})

    def seen(self, topic: str) -> int:
        """How many messages of ``topic`` were fed so far."""
        return self.topics[topic].seen
