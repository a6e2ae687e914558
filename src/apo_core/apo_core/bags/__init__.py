"""The one ROS-free bag library: read, scan and recover episode bags (rosbag2 directory, MCAP storage).

Used by the trainer (reading, conversion, analysis) and the
recorder (``apo_recorder.recovery``), neither of which imports the other. Imports no rclpy,
apo_interfaces or other apo package; needs ``rosbags``, ``pyyaml``, ``zstandard`` and ``lz4``.

Modules: :mod:`~apo_core.bags.mcap_records` (record layout and parsing), :mod:`~apo_core.bags.scan`
(the scanner: resync mode for reading damaged bags, stop mode for recovery),
:mod:`~apo_core.bags.typestore` (type stores from message definitions), :mod:`~apo_core.bags.layout`
(bag files, metadata.yaml, journal), :mod:`~apo_core.bags.report` (ReadReport) and
:mod:`~apo_core.bags.reader` (the episode-bag reader).

Reading one episode bag, including damaged ones.

Why this exists: the trainer runs where no ROS is installed, and the bags it reads come from a
recorder that can be killed at any moment. Two read paths share one interface (:class:`EpisodeBag`):

- **indexed** (the normal case): ``metadata.yaml`` is present and every MCAP file ends with its
  footer. Messages are read through ``rosbags.rosbag2.Reader``, which uses the chunk indexes and
  merges the chunks lazily, so only the chunks that overlap in time are in memory at once. The
  messages read per topic are checked against ``metadata.yaml`` (rosbags stops parsing a chunk
  at an overwritten record without an error; the shortfall is how that shows).
- **recovered** (a checked scan): ``metadata.yaml`` is missing or unreadable, an MCAP file has no
  footer/summary, or the indexed read failed part-way (then the scan resumes after the last
  message already delivered). The data section is walked record by record with every record
  checked for plausibility; a torn chunk gives up the complete records it still holds; a damaged
  stretch is skipped to the next record that parses as a chunk or as a message of a known
  channel (also inside an uncompressed chunk); chunks failing their CRC are dropped; schemas and
  channels come from the summary when the footer survived. What could not be read is counted in
  :class:`ReadReport` (bytes unreadable or cut off, torn/dropped chunks, undecodable messages,
  messages that metadata.yaml lists but were not read).

Integrity (why CRCs matter here: a flipped bit in a chunk's payload parses fine and would become a
wrong image in the training set). Every chunk that carries a CRC is checked before any of its
messages is used, in both paths; a chunk that fails is dropped whole and reported in
``ReadReport.damage`` with its offset, log-time range and what it held (from its message index).
A file whose chunks carry CRCs (the recorder writes them, see ``apo_recorder.mcap_storage``) is held
to it: a chunk without a CRC there, or message records salvaged after a damaged stretch, are dropped
as unverifiable; the summary CRC is checked too (a damaged index means scanning). Bags without CRCs
(written by older recorders) are read as before and reported ``unverified``
(``ReadReport.integrity``).

Messages come out in log-time order (ties in file order) in both paths, never more than the
chunks overlapping in time in memory, decoded with a type store built from the message
definitions embedded in the bag itself (the MCAP schema records), so ``apo_interfaces/msg/*``
decode without that package installed. Standard types without an embedded definition fall back
to rosbags' built-in ROS 2 store. ``custom_data`` comes from ``metadata.yaml``, else from the
recorder's journal (``apo_recording.yaml``, left by a killed recorder), else from the MCAP's
rosbag2 metadata record.
"""

from apo_core.bags.layout import (
    bag_bytes,
    find_bags,
    is_bag_dir,
    load_metadata,
    mcap_files,
    read_custom_data,
    read_journal,
    recording_in_progress,
)
from apo_core.bags.reader import EpisodeBag, open_episode_bag
from apo_core.bags.report import BagMessage, BagReadError, ReadReport, damage_text, integrity_text
from apo_core.bags.scan import ScanError, ScanState, scan_mcap
from apo_core.bags.typestore import TypeRegistry, registry_for, typestore_from_definitions

__all__ = [
    "BagMessage", "BagReadError", "EpisodeBag", "ReadReport", "ScanError", "ScanState", "TypeRegistry", "bag_bytes",
    "damage_text",
    "find_bags", "integrity_text", "is_bag_dir", "load_metadata", "mcap_files", "open_episode_bag",
    "read_custom_data", "read_journal", "recording_in_progress", "registry_for", "scan_mcap",
    "typestore_from_definitions",
]
