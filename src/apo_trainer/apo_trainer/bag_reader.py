"""Read one episode bag (rosbag2 directory, MCAP storage) without ROS, including damaged ones.

The reader lives in the ROS-free bag library :mod:`apo_core.bags` (shared with the recorder's
recovery); this module re-exports the names the trainer, the tests and the benchmarks import from
here. See :mod:`apo_core.bags` for the two read paths (indexed, recovered) and the integrity rules.
"""

from __future__ import annotations

from apo_core.bag_contract import JOURNAL_NAME  # noqa: F401 (re-exported)
from apo_core.bags.layout import (  # noqa: F401 (re-exported)
    bag_bytes,
    find_bags,
    is_bag_dir,
    load_metadata,
    mcap_files,
    read_custom_data,
    read_journal,
    recording_in_progress,
)
from apo_core.bags.mcap_records import (  # noqa: F401 (re-exported)
    CHUNK_FIXED,
    COMPRESSIONS,
    FOOTER_SIZE,
    KNOWN_OPS,
    MCAP_MAGIC,
    OP_CHANNEL,
    OP_CHUNK,
    OP_DATA_END,
    OP_FOOTER,
    OP_HEADER,
    OP_MESSAGE,
    OP_SCHEMA,
    ZSTD_FRAME_MAGIC,
    ChunkInfo,
    parse_chunk_header,
)
from apo_core.bags.reader import EpisodeBag, open_episode_bag  # noqa: F401 (re-exported)
from apo_core.bags.report import (  # noqa: F401 (re-exported)
    BagMessage,
    BagReadError,
    ReadReport,
    damage_text,
    integrity_text,
)
from apo_core.bags.typestore import TypeRegistry, registry_for  # noqa: F401 (re-exported)
