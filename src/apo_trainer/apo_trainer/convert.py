"""Convert recorded episode bags into the training dataset (``apo_core.dataset`` schema).

``apo-convert BAGS_DIR OUT.h5 [--k 10] [--expert-demos expert.h5] ...`` (see :func:`main`), or
:func:`convert_bags` / :func:`convert_bag` from Python. Needs no ROS install.

One bag directory (``BAGS_DIR/<episode_id>/``) becomes one episode:

- every ``/apo/step`` (LabelledStep) message is one sample: ``actions`` = executed action,
  ``policy_actions`` = the policy's proposal (NaN where the step carried none), ``live_labels``,
  ``modes``, ``step_index`` and ``timestamps`` (the step's header stamp in seconds, its log time
  when the stamp is unset) come from the step;
- ``obs/image`` and ``obs/state`` (RobotState.proprio) are the newest camera image and robot state
  stamped at or before the step (rule in :mod:`apo_trainer.convert_align`); steps with no image
  at or before them, and steps with no robot state while the bag has robot states, are dropped
  and counted; so are duplicated step indices and steps of another episode id;
- ``labels`` = live labels with the K-window (``apo_core.labels.apply_k_window``) applied to the
  samples in order (a gap in step_index is not bridged: the window counts recorded samples);
- attributes: episode id, instruction, task, outcome, policy version from the bag's
  ``apo.*`` custom data (``metadata.yaml``, else the recorder's journal of a killed recording,
  else the MCAP's rosbag2 metadata record), else from its EpisodeEvent messages (outcome = the
  last success/failure/abort event), else its steps, else the directory name;
  ``source="interactive"``; ``origin`` = the bag directory (symlinks resolved); plus
  ``bag_read_mode``, ``missing_steps``, ``dropped_steps``, ``bag_integrity`` (``verified`` |
  ``partly verified`` | ``unverified``, see below) and ``bag_damage`` (damaged chunks/stretches).

The run is incremental and never aborts on one bad bag: episode ids already in the output are
skipped; a damaged bag (no metadata.yaml, no MCAP footer, torn or overwritten chunks) is read as
far as it goes and added as "recovered" (what was lost is in the report); a bag that cannot be
read or converted at all is reported as "failed" and leaves the output untouched, since an
episode is written (by ``apo_core.dataset.append_episode``) only once its bag has been read to
the end. Images are staged per step in a temporary file next to the output and handed to
``append_episode`` memory-mapped, so the process's own memory does not grow with episode length
(the staged images live in the page cache). A bag whose recorder is still running (its journal
names a live process, or, without a journal, no metadata.yaml and files younger than
``settle_seconds``) is skipped and picked up by a later run.

Damaged chunks (integrity): the reader checks every chunk's CRC before using it and drops a chunk
that fails, whole. The episode is still added (the recovery model above: as far as the bag reads),
with a report line per damaged chunk naming the episode, the file, the byte offset, the log-time
range and the messages lost per topic. Its samples exclude, besides the steps lost with the chunk
(``missing_steps`` when they leave a gap in ``step_index``), every step whose image or state could
have come from the lost log-time range (:meth:`convert_align.AlignedStep.exposure`): dropped and
counted in ``dropped_steps`` ("observation may have been in a damaged part of the bag") rather than
paired with an older frame. So no sample holds damaged bytes or a stand-in observation. Bags written
without CRCs (older recorders) convert as before and are reported ``unverified``.

Expert demonstrations from another dataset file are merged in (``source="expert"``), and the
action statistics over all actions in the output (expert + interactive) are recomputed into
``action_stats.json`` next to it (gripper = last dimension left unnormalised): operations on the
dataset file, in :mod:`apo_core.dataset_ops`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from apo_core import topics
from apo_core.bag_contract import (  # noqa: F401 (EVENT_*: re-exported, were defined here)
    EVENT_ABORT,
    EVENT_END,
    EVENT_FAILURE,
    EVENT_START,
    EVENT_SUCCESS,
    KEY_EPISODE_ID,
    OUTCOME_EVENTS,
    OUTCOME_UNKNOWN,
    EpisodeFacts,
    episode_facts,
)
from apo_core.bags import (
    BagReadError,
    EpisodeBag,
    bag_bytes,
    damage_text,
    find_bags,
    integrity_text,
    mcap_files,
    read_custom_data,
    recording_in_progress,
)
from apo_core.dataset import (
    Episode,
    append_episode,
    episode_ids,
    sorted_episode_names,
)
from apo_core.dataset_ops import ExpertResult, compute_action_stats, merge_expert, relabel
from apo_core.errors import ApoError
from apo_core.labels import DEFAULT_K, Label, apply_k_window, label_counts
from apo_core.normalization import STATS_FILENAME
from apo_trainer.convert_align import DEFAULT_MAX_LATENESS_S, StepAligner

CONVERT_TOPICS = (topics.IMAGE, topics.ROBOT_STATE, topics.STEP, topics.EPISODE)
# The outcome of each success/failure/abort event (apo_core.bag_contract.OUTCOME_EVENTS; old name kept).
EVENT_OUTCOME = OUTCOME_EVENTS
IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ConvertError(ApoError, ValueError):
    """A bag cannot be converted; the message names the bag and the step or field at fault."""


class ActionDimError(ConvertError):
    """A bag's action dimension differs from the dataset's (or changes within the bag)."""


@dataclass
class ConvertOptions:
    k: int = DEFAULT_K
    max_lateness: float = DEFAULT_MAX_LATENESS_S  # seconds an observation may arrive after its step
    recover: bool = True  # read damaged bags as far as they go (False: report them as failed)
    settle_seconds: float = 30.0  # a bag without metadata.yaml modified this recently is being recorded
    image_compression: str | None = None  # HDF5 filter for obs/image ("gzip", "lzf") or None
    unmask_zero_range: bool = False  # leave never-varying action dimensions unnormalised
    relabel: bool = False  # re-apply the K-window to episodes already in the output
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ConvertError(f"--k (K-window) must be a non-negative integer, got {self.k!r}")
        if self.max_lateness < 0:
            raise ConvertError(f"--max-lateness must be >= 0 seconds, got {self.max_lateness}")
        if self.image_compression not in (None, "gzip", "lzf"):
            raise ConvertError(f"--image-compression must be gzip or lzf, got {self.image_compression!r}")


@dataclass
class BagResult:
    """What happened to one bag."""

    bag: str
    status: str = "failed"  # added | recovered | skipped | failed
    episode_id: str = ""
    group: str = ""
    steps: int = 0
    labels: dict = field(default_factory=dict)
    missing_steps: list = field(default_factory=list)  # [first, last] ranges of absent step indices
    dropped: dict = field(default_factory=dict)  # reason -> number of steps
    read: dict | None = None  # apo_core.bags.ReadReport.to_dict()
    notes: list = field(default_factory=list)
    error: str = ""

    def line(self) -> str:
        head = f"{self.status:9s} {Path(self.bag).name}"
        if self.episode_id and self.episode_id != Path(self.bag).name:
            head += f" (episode {self.episode_id})"
        if self.status in ("added", "recovered"):
            head += f": {self.steps} steps, labels {self.labels}"
        if self.error:
            head += f": {self.error}"
        parts = [head]
        if self.missing_steps:
            parts.append(f"    missing step indices: {_format_ranges(self.missing_steps)}")
        for reason, count in self.dropped.items():
            parts.append(f"    dropped {count} step(s): {reason}")
        if self.read and self.read.get("mode") == "recovered":
            parts.append(f"    read: {_read_summary(self.read)}")
        if self.read:
            who = f"episode {self.episode_id or Path(self.bag).name}"
            parts.extend(f"    {who}: damaged {damage_text(d)}" for d in self.read.get("damage", []))
            if self.read.get("integrity") != "verified":
                parts.append(f"    integrity: {integrity_text(self.read)}")
        parts.extend(f"    note: {n}" for n in self.notes)
        return "\n".join(parts)


@dataclass
class ConversionReport:
    output: str
    k: int = DEFAULT_K
    bags: list[BagResult] = field(default_factory=list)
    expert: ExpertResult | None = None
    stats_path: str = ""
    stats_samples: int = 0
    zero_range_dims: list = field(default_factory=list)
    stats_error: str = ""
    relabelled: int = 0
    seconds: float = 0.0
    bytes_read: int = 0

    def by_status(self, status: str) -> list[BagResult]:
        return [b for b in self.bags if b.status == status]

    @property
    def added(self) -> list[BagResult]:
        """Bags converted into new episodes (clean and recovered)."""
        return [b for b in self.bags if b.status in ("added", "recovered")]

    @property
    def failed(self) -> list[BagResult]:
        return self.by_status("failed")

    @property
    def steps_added(self) -> int:
        return sum(b.steps for b in self.added)

    @property
    def label_histogram(self) -> dict[str, int]:
        total = Counter()
        for b in self.added:
            total.update(b.labels)
        return {lab.name: int(total.get(lab.name, 0)) for lab in Label}

    def summary(self) -> str:
        lines = [f"apo-convert -> {self.output} (K = {self.k})"]
        if self.expert is not None:
            e = self.expert
            lines.append(f"expert demos {e.path}: {e.added} episode(s) added ({e.steps} steps), {e.skipped} already present"
                         + (f", {e.source_changed} re-tagged source=expert" if e.source_changed else ""))
            lines.extend(f"    error: {err}" for err in e.errors)
        lines.extend(b.line() for b in self.bags)
        rec = len(self.by_status("recovered"))
        lines.append(
            f"bags: {len(self.added)} added ({rec} recovered from damaged bags), {len(self.by_status('skipped'))} "
            f"skipped, {len(self.failed)} failed; {self.steps_added} steps added; labels {self.label_histogram}")
        damaged = sum(1 for b in self.bags if b.read and b.read.get("damage"))
        unverified = sum(1 for b in self.added if b.read and b.read.get("integrity") != "verified")
        if damaged or unverified:
            lines.append(f"integrity: {damaged} bag(s) with damaged chunks (their samples dropped, see above), "
                         f"{unverified} episode(s) added without full CRC verification")
        if self.relabelled:
            lines.append(f"re-applied K = {self.k} to {self.relabelled} episode(s) already in the output")
        if self.stats_path:
            lines.append(f"action statistics over {self.stats_samples} actions -> {self.stats_path}")
        if self.zero_range_dims:
            lines.append(
                f"WARNING: action dimension(s) {self.zero_range_dims} never vary in the data (q99 == q01): they "
                "cannot be normalised; collect more varied data, or rerun with --unmask-zero-range to pass them "
                "through unnormalised")
        if self.stats_error:
            lines.append(f"action statistics not written: {self.stats_error}")
        if self.seconds > 0:
            lines.append(f"{self.bytes_read / 1e6:.1f} MB of bags in {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label_histogram"] = self.label_histogram
        out["steps_added"] = self.steps_added
        return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def convert_bags(bags_dir, output, expert_demos=None, options: ConvertOptions | None = None,
                 **overrides) -> ConversionReport:
    """Convert every new episode bag under ``bags_dir`` into ``output``; see the module docs.

    ``overrides`` are :class:`ConvertOptions` fields (``k=5``, ``progress=False``, ...).
    """
    if options is None:
        options = ConvertOptions(**overrides)
    elif overrides:
        options = ConvertOptions(**{**asdict(options), **overrides})
    output = Path(output)
    bags = find_bags(bags_dir)
    report = ConversionReport(output=str(output), k=options.k)
    t0 = time.monotonic()
    known = set(episode_ids(output))
    if expert_demos is not None:
        report.expert = merge_expert(expert_demos, output, k=options.k, known=known,
                                     image_compression=options.image_compression)
    if options.relabel:
        report.relabelled = relabel(output, options.k)
    dims = _dataset_action_dims(output)
    sizes = {b: bag_bytes(b) for b in bags}
    bar = _progress(sum(sizes.values()), options.progress)
    try:
        for bag in bags:
            bar.set_postfix_str(bag.name, refresh=False)
            counted = [0]

            def on_bytes(n, counted=counted):
                counted[0] += n
                bar.update(n)

            result = convert_bag(bag, output, options=options, known=known, action_dim=dims, on_bytes=on_bytes)
            bar.update(max(0, sizes[bag] - counted[0]))
            report.bytes_read += sizes[bag]
            report.bags.append(result)
            if result.status in ("added", "recovered"):
                known.add(result.episode_id)
                dims = dims or _dataset_action_dims(output)
            if not bar.disable and (result.status in ("recovered", "failed") or result.missing_steps):
                bar.write(result.line(), file=sys.stderr)
    finally:
        bar.close()
    _write_stats(output, report, options)
    report.seconds = time.monotonic() - t0
    return report


def convert_bag(bag, output, options: ConvertOptions | None = None, known=None, action_dim: int | None = None,
                on_bytes=None) -> BagResult:
    """Convert one bag into one episode of ``output``; never raises for a bad bag (see status)."""
    options = options or ConvertOptions()
    bag = Path(bag)
    output = Path(output)
    result = BagResult(bag=str(bag))
    known = set(episode_ids(output)) if known is None else known
    if action_dim is None:
        action_dim = _dataset_action_dims(output)
    try:
        recording = _being_recorded(bag, options.settle_seconds)
        if recording:
            result.status = "skipped"
            result.error = recording
            return result
        quick_id = read_custom_data(bag).get(KEY_EPISODE_ID, "")
        if quick_id and quick_id in known:
            result.status, result.episode_id = "skipped", quick_id
            result.notes.append("episode already in the output")
            return result
        _convert(bag, output, options, known, action_dim, result, on_bytes)
    except Exception as exc:  # one bad bag must never abort the run: report it and go on
        result.status = "failed"
        result.error = str(exc) if isinstance(exc, ApoError) else f"{type(exc).__name__}: {exc}"
    return result


def _convert(bag: Path, output: Path, options, known, action_dim, result: BagResult, on_bytes) -> None:
    recover = "auto" if options.recover else "never"
    for attempt in range(2):
        with EpisodeBag(bag, recover=recover) as reader:
            sink = None
            try:
                custom = reader.custom_data
                episode_id = _episode_id(reader, bag, result)
                if episode_id in known:
                    result.status = "skipped"
                    result.notes.append("episode already in the output")
                    return
                sink = _EpisodeSink(bag, output, episode_id, action_dim, options.max_lateness)
                events = _stream(reader, sink, options, on_bytes if attempt == 0 else None)
                if reader.mode == "indexed" and reader.report.messages_missing and options.recover and attempt == 0:
                    # rosbags skipped damaged records silently; the scan resynchronises inside chunks.
                    raise BagReadError(reader.report.problems[-1])
            except BagReadError as exc:
                if sink is not None:
                    sink.discard()
                if reader.mode == "indexed" and options.recover and attempt == 0:
                    result.notes.append(f"indexed read failed ({exc}); re-read by scanning")
                    recover = "always"
                    continue
                raise
            except BaseException:
                if sink is not None:
                    sink.discard()
                raise
            result.read = reader.report.to_dict()
            mode = reader.mode
        break
    try:
        facts = _episode_facts(custom, episode_id, events, sink, result)
        if sink.kept == 0:
            result.status = "failed" if mode == "recovered" or sink.dropped else "skipped"
            result.error = "no usable steps in the bag" + (f" ({_dropped_text(sink.dropped)})" if sink.dropped else "")
            result.dropped = dict(sink.dropped)
            return
        episode = sink.episode(facts, mode)
        episode.attrs.update({"bag_integrity": result.read["integrity"], "bag_damage": len(result.read["damage"])})
        episode.labels(options.k)  # inconsistent labels/modes fail this bag here, before anything is written
        result.group = append_episode(output, episode, k=options.k, image_compression=options.image_compression)
    finally:
        sink.discard()
    result.status = "recovered" if mode == "recovered" else "added"
    result.episode_id = episode_id
    result.steps = len(episode)
    result.labels = label_counts(apply_k_window(episode.live_labels, options.k, modes=episode.modes))
    result.missing_steps = sink.missing_ranges()
    result.dropped = dict(sink.dropped)
    result.notes.extend(sink.notes)


def _stream(reader: EpisodeBag, sink: _EpisodeSink, options: ConvertOptions, on_bytes) -> list:
    aligner = StepAligner((topics.IMAGE, topics.ROBOT_STATE), options.max_lateness)
    events = []
    for m in reader.messages(CONVERT_TOPICS, on_bytes=on_bytes):
        msg = m.msg
        if m.topic == topics.IMAGE:
            aligner.add_observation(topics.IMAGE, _stamp(msg), m.log_time, msg)
        elif m.topic == topics.ROBOT_STATE:
            aligner.add_observation(topics.ROBOT_STATE, _stamp(msg), m.log_time,
                                    np.array(msg.proprio, dtype=np.float64))
        elif m.topic == topics.STEP:
            sink.check_step(msg)
            aligner.add_step(_stamp(msg), m.log_time, msg)
        elif m.topic == topics.EPISODE:
            events.append(msg)
        for aligned in aligner.ready(m.log_time):
            sink.add(aligned)
    for aligned in aligner.finish():
        sink.add(aligned)
    sink.close(states_seen=aligner.seen(topics.ROBOT_STATE) > 0, lost=reader.report.lost_time_ranges())
    return events


# --------------------------------------------------------------------------------------------
# Episode attributes
# --------------------------------------------------------------------------------------------
def _episode_id(reader: EpisodeBag, bag: Path, result: BagResult) -> str:
    """Episode id before streaming (to skip known episodes early): custom data, else events/steps.

    The rule is :func:`apo_core.bag_contract.episode_facts`'s (the events are not read yet: the first
    EPISODE/STEP message carrying an id is looked up only when the custom data has none).
    """
    custom = reader.custom_data
    first_id = ""
    if not custom.get(KEY_EPISODE_ID):
        for m in reader.messages((topics.EPISODE, topics.STEP)):
            if getattr(m.msg, "episode_id", ""):
                first_id = m.msg.episode_id
                result.notes.append(f"episode id {first_id!r} taken from the first {m.topic} message "
                                    f"(no {KEY_EPISODE_ID} custom data)")
                break
        if not first_id:
            result.notes.append("episode id taken from the directory name (no custom data, no events, no steps)")
    result.episode_id = episode_facts(custom, (), first_episode_id=first_id, default_episode_id=bag.name).episode_id
    return result.episode_id


def _episode_facts(custom: dict, episode_id: str, events: list, sink: _EpisodeSink,
                   result: BagResult) -> EpisodeFacts:
    """Instruction, task, policy version and outcome: :func:`apo_core.bag_contract.episode_facts`."""
    facts = episode_facts(custom, events, first_episode_id=episode_id, step_policy_versions=sink.versions,
                          default_episode_id=episode_id)
    result.notes.extend(facts.notes)
    return replace(facts, outcome=facts.outcome or OUTCOME_UNKNOWN)


# --------------------------------------------------------------------------------------------
# Building one episode with bounded memory
# --------------------------------------------------------------------------------------------
class _EpisodeSink:
    """Collects aligned samples: images go to a staging file, the small arrays stay in memory."""

    def __init__(self, bag: Path, output: Path, episode_id: str, action_dim: int | None,
                 max_lateness: float = DEFAULT_MAX_LATENESS_S):
        self.bag = bag
        self.lateness_ns = int(round(max_lateness * 1e9))
        self.output = output
        self.episode_id = episode_id
        self.expected_dim = action_dim
        self.dim: int | None = None
        self.shape: tuple | None = None
        self.state_dim: int | None = None
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".staging", dir=output.parent)
        self.staging_path = Path(name)
        self.staging = os.fdopen(fd, "wb")
        self.count = 0  # samples staged
        self.keep: np.ndarray | None = None  # after close(): which staged samples make the episode
        self.actions: list = []
        self.proposals: list = []
        self.live: list = []
        self.modes: list = []
        self.index: list = []
        self.times: list = []
        self.states: list = []  # None where no state was at or before the step
        self.exposure: list = []  # (lo, hi) log times where lost messages would make the sample doubtful
        self.versions: Counter = Counter()
        self.seen_index: set = set()
        self.dropped: Counter = Counter()
        self.notes: list = []
        self.backwards = 0
        self._memmap = None

    # -- per step ---------------------------------------------------------------------------
    def check_step(self, step) -> None:
        """Fail fast (before reading the rest of the bag) on an action dimension mismatch."""
        n = len(step.executed_action)
        ref = self.dim if self.dim is not None else self.expected_dim
        if ref is not None and n != ref and n > 0:
            where = "earlier steps of this bag have" if self.dim is not None else "the dataset has"
            raise ActionDimError(f"bag {self.bag}: step {step.step_index} has a {n}-D executed action but {where} "
                                 f"{ref}-D actions")
        if self.dim is None and n > 0:
            self.dim = n
        p = len(step.policy_action)
        if p and self.dim is not None and p != self.dim:
            raise ActionDimError(f"bag {self.bag}: step {step.step_index} has a {p}-D policy proposal for a "
                                 f"{self.dim}-D action")

    def add(self, aligned) -> None:
        step = aligned.step.value
        if step.episode_id and step.episode_id != self.episode_id:
            self.dropped[f"step of another episode ({step.episode_id!r})"] += 1
            return
        idx = int(step.step_index)
        if idx in self.seen_index:
            self.dropped["duplicate step_index"] += 1
            return
        if int(step.label) not in (Label.AUTONOMOUS, Label.HUMAN):
            self.dropped[f"live label {int(step.label)} (must be 1 or 2)"] += 1
            return
        if len(step.executed_action) == 0:
            self.dropped["empty executed_action"] += 1
            return
        image_obs = aligned.observations.get(topics.IMAGE)
        if image_obs is None:
            self.dropped["no camera image at or before the step"] += 1
            return
        image = _image_array(image_obs.value, self.bag)
        if self.shape is None:
            self.shape = image.shape
        elif image.shape != self.shape:
            raise ConvertError(f"bag {self.bag}: camera image size changes from {self.shape} to {image.shape} "
                               f"at step {idx}")
        state_obs = aligned.observations.get(topics.ROBOT_STATE)
        state = None if state_obs is None else state_obs.value
        if state is not None:
            if self.state_dim is None:
                self.state_dim = len(state)
            elif len(state) != self.state_dim:
                raise ConvertError(f"bag {self.bag}: robot state (proprio) size changes from {self.state_dim} to "
                                   f"{len(state)} at step {idx}")
            if not np.all(np.isfinite(state)):
                raise ConvertError(f"bag {self.bag}: robot state at step {idx} contains NaN or inf")
        action = np.asarray(step.executed_action, dtype=np.float64)
        if not np.all(np.isfinite(action)):
            raise ConvertError(f"bag {self.bag}: executed action at step {idx} contains NaN or inf")
        proposal = np.asarray(step.policy_action, dtype=np.float64)
        if proposal.size == 0:
            proposal = np.full(self.dim, np.nan)
        if self.index and idx < self.index[-1]:
            self.backwards += 1
        self.staging.write(memoryview(image).cast("B"))
        self.seen_index.add(idx)
        self.actions.append(action)
        self.proposals.append(proposal)
        self.live.append(int(step.label))
        self.modes.append(int(step.mode))
        self.index.append(idx)
        t = aligned.step.stamp or aligned.step.log_time
        self.times.append(t / 1e9)
        self.states.append(state)
        self.exposure.append(aligned.exposure(self.lateness_ns))
        if step.policy_version:
            self.versions[step.policy_version] += 1
        self.count += 1

    def close(self, states_seen: bool, lost=()) -> None:
        """Decide which staged samples make the episode: all, except those lacking a robot state
        (when the bag has states) and those whose observations a damaged part of the bag could have
        changed (``lost``: log-time ranges the reader could not read)."""
        self.staging.close()
        self.keep = np.ones(self.count, dtype=bool)
        if states_seen:
            self.keep = np.array([s is not None for s in self.states], dtype=bool)
            missing = int((~self.keep).sum())
            if missing:
                self.dropped["no robot state at or before the step"] += missing
        if lost and self.count:
            exposure = np.asarray(self.exposure, dtype=np.int64).reshape(-1, 2)
            doubtful = np.zeros(self.count, dtype=bool)
            for start, end in lost:
                doubtful |= (exposure[:, 0] <= end) & (exposure[:, 1] >= start)
            doubtful &= self.keep
            if doubtful.any():
                self.keep &= ~doubtful
                self.dropped["observation may have been in a damaged part of the bag"] += int(doubtful.sum())
        if self.backwards:
            self.notes.append(f"step_index goes backwards {self.backwards} time(s) (kept in recorded order)")

    # -- results ----------------------------------------------------------------------------
    def missing_ranges(self) -> list[list[int]]:
        if not self.index:
            return []
        present = np.unique(np.asarray(self.index))
        ranges = []
        if present[0] > 0:
            ranges.append([0, int(present[0]) - 1])
        gaps = np.flatnonzero(np.diff(present) > 1)
        for g in gaps:
            ranges.append([int(present[g]) + 1, int(present[g + 1]) - 1])
        return ranges

    @property
    def kept(self) -> int:
        """Samples of the episode (valid after close())."""
        return int(self.keep.sum()) if self.keep is not None else self.count

    def episode(self, info: EpisodeFacts, mode: str) -> Episode:
        keep = self.keep
        has_states = not keep.all() or any(s is not None for s in self.states)
        if not keep.all():
            self._compact(keep)
        h, w, c = self.shape
        n = self.kept
        self._memmap = np.memmap(self.staging_path, dtype=np.uint8, mode="r", shape=(n, h, w, c))

        def sel(xs):
            return [x for x, k in zip(xs, keep, strict=True) if k]

        states = np.stack(sel(self.states)) if has_states else np.zeros((n, 0), dtype=np.float32)
        missing = self.missing_ranges()
        return Episode(
            episode_id=info.episode_id, instruction=info.instruction, images=self._memmap,
            actions=np.stack(sel(self.actions)), live_labels=np.asarray(sel(self.live), np.uint8), states=states,
            policy_actions=np.stack(sel(self.proposals)), modes=np.asarray(sel(self.modes), np.uint8),
            step_index=np.asarray(sel(self.index), np.int64), timestamps=np.asarray(sel(self.times), np.float64),
            task=info.task, outcome=info.outcome, source="interactive", policy_version=info.policy_version,
            origin=str(self.bag.resolve()),
            attrs={"bag_read_mode": mode, "missing_steps": int(sum(b - a + 1 for a, b in missing)),
                   "dropped_steps": int(sum(self.dropped.values()))},
        )

    def _compact(self, keep: np.ndarray) -> None:
        """Rewrite the staging file without the rows ``keep`` rejects, a block at a time."""
        h, w, c = self.shape
        frame = h * w * c
        src = np.memmap(self.staging_path, dtype=np.uint8, mode="r", shape=(len(keep), frame))
        fd, name = tempfile.mkstemp(prefix=f".{self.output.name}.", suffix=".staging", dir=self.output.parent)
        with os.fdopen(fd, "wb") as out:
            for lo in range(0, len(keep), 64):
                block = src[lo:lo + 64][keep[lo:lo + 64]]
                out.write(memoryview(np.ascontiguousarray(block)).cast("B"))
        del src
        self.staging_path.unlink()
        self.staging_path = Path(name)

    def discard(self) -> None:
        self._memmap = None
        if not self.staging.closed:
            self.staging.close()
        self.staging_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Action statistics of the output
# --------------------------------------------------------------------------------------------
def _write_stats(output: Path, report: ConversionReport, options: ConvertOptions) -> None:
    if not output.is_file():
        report.stats_error = "the output has no episodes"
        return
    try:
        stats, zero = compute_action_stats(output, options.unmask_zero_range)
    except ApoError as exc:
        report.stats_error = str(exc)
        return
    report.stats_path = str(stats.save(output.parent / STATS_FILENAME))
    report.stats_samples = int(stats.extra.get("num_samples", 0))
    report.zero_range_dims = zero


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _stamp(msg) -> int:
    st = msg.header.stamp
    return int(st.sec) * 1_000_000_000 + int(st.nanosec)


def _image_array(msg, bag) -> np.ndarray:
    """An Image message as (H, W, 3) uint8 RGB, honouring the row stride."""
    enc = str(msg.encoding).lower()
    if enc not in IMAGE_CHANNELS:
        raise ConvertError(f"bag {bag}: camera image encoding {msg.encoding!r} is not supported "
                           f"({', '.join(IMAGE_CHANNELS)} are)")
    h, w, c = int(msg.height), int(msg.width), IMAGE_CHANNELS[enc]
    step = int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h == 0 or w == 0 or step < w * c or data.size < h * step:
        raise ConvertError(f"bag {bag}: camera image {w}x{h} {enc} with step {step} has {data.size} bytes")
    arr = data[:h * step].reshape(h, step)[:, :w * c].reshape(h, w, c)
    if enc == "bgr8":
        arr = arr[..., ::-1]
    elif enc == "rgba8":
        arr = arr[..., :3]
    elif enc == "bgra8":
        arr = arr[..., 2::-1]
    elif enc == "mono8":
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _dataset_action_dims(output) -> int | None:
    import h5py

    output = Path(output)
    if not output.is_file():
        return None
    with h5py.File(output, "r") as f:
        for name in sorted_episode_names(f):
            return int(f["data"][name]["actions"].shape[1])
    return None


def _being_recorded(bag: Path, settle_seconds: float) -> str:
    """Why ``bag`` looks like it is still being recorded ("" if it does not)."""
    alive = recording_in_progress(bag)
    if alive:
        return "still being recorded (the recorder's journal names a running process)"
    if alive is False or settle_seconds <= 0:
        return ""
    files = mcap_files(bag)
    newest = max((p.stat().st_mtime for p in files), default=bag.stat().st_mtime)
    if time.time() - newest < settle_seconds:
        return f"no metadata.yaml and written less than {settle_seconds:g} s ago: probably still being recorded"
    return ""


def _format_ranges(ranges) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def _dropped_text(dropped) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in dropped.items())


def _read_summary(read: dict) -> str:
    parts = []
    if not read.get("metadata_present", True):
        parts.append("no metadata.yaml")
    if not read.get("footer_present", True):
        parts.append("no MCAP footer")
    parts.append(f"{read.get('messages_read', 0)} messages recovered")
    for key, text in (("bytes_lost", "bytes unreadable"), ("bytes_missing", "bytes cut off"),
                      ("chunks_torn", "torn chunk(s)"), ("chunks_dropped", "chunk(s) dropped"),
                      ("messages_undecodable", "undecodable message(s)"),
                      ("messages_unknown_channel", "message(s) on unknown channels")):
        if read.get(key):
            parts.append(f"{read[key]} {text}")
    return ", ".join(parts)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="apo-convert", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apo-convert",
        description="Convert recorded episode bags (one rosbag2/MCAP directory per episode) into the APO "
                    "training dataset (HDF5). Incremental: episodes already in OUT.h5 are skipped. Damaged "
                    "bags are recovered as far as they read; unreadable ones are reported, never fatal. "
                    "Exit status: 0 = done, 1 = some bags failed (the rest were converted), 2 = usage error.")
    p.add_argument("bags_dir", help="directory holding one bag directory per episode")
    p.add_argument("output", help="dataset file to create or extend (action_stats.json is written next to it)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="K-window: steps before a takeover labelled 0 (%(default)s)")
    p.add_argument("--expert-demos", metavar="H5", help="merge the episodes of this dataset file as source=expert")
    p.add_argument("--max-lateness", type=float, default=DEFAULT_MAX_LATENESS_S, metavar="S",
                   help="seconds (log time) an image/state may arrive after its step and still be aligned "
                        "(%(default)s)")
    p.add_argument("--no-recover", action="store_true", help="report damaged bags as failed instead of recovering")
    p.add_argument("--settle-seconds", type=float, default=30.0, metavar="S",
                   help="skip bags without metadata.yaml modified less than S seconds ago (being recorded; "
                        "%(default)s)")
    p.add_argument("--image-compression", choices=("gzip", "lzf"), help="HDF5 compression of the images")
    p.add_argument("--unmask-zero-range", action="store_true",
                   help="leave action dimensions that never vary unnormalised in action_stats.json")
    p.add_argument("--relabel", action="store_true",
                   help="also re-apply --k to the episodes already in the output")
    p.add_argument("--report-json", metavar="PATH", help="write the conversion report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = ConvertOptions(k=args.k, max_lateness=args.max_lateness, recover=not args.no_recover,
                                 settle_seconds=args.settle_seconds, image_compression=args.image_compression,
                                 unmask_zero_range=args.unmask_zero_range, relabel=args.relabel,
                                 progress=not args.no_progress and sys.stderr.isatty())
        report = convert_bags(args.bags_dir, args.output, expert_demos=args.expert_demos, options=options)
    except (ApoError, OSError) as exc:  # a missing directory or an unreadable output file
        print(f"apo-convert: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
