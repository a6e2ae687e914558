"""apo_recorder: one labelled rosbag2 (MCAP) bag per episode.

The package's ROS-free part (importable without rclpy: the trainer uses it on a GPU server):
``EpisodeBagWriter`` (threaded, crash-tolerant writer), ``recover_bag`` (repair a killed recorder's
bag), ``read_bag_info`` / ``iter_messages`` (read bags back), and ``contract`` (the bag layout).
The ROS node is ``apo_recorder.recorder_node``.
"""

from apo_recorder.bag_writer import EpisodeBagWriter, TopicSpec, WriterStats, qos_dict, write_bag
from apo_recorder.reader import (
    BagInfo,
    RecordedMessage,
    iter_messages,
    list_episode_bags,
    list_unfinished_bags,
    read_bag_info,
)
from apo_recorder.recovery import RecoveryError, RecoveryReport, recover_bag

__version__ = "0.1.0"

__all__ = [
    "BagInfo", "RecordedMessage", "EpisodeBagWriter", "RecoveryError", "RecoveryReport", "TopicSpec",
    "WriterStats", "__version__", "iter_messages", "list_episode_bags", "list_unfinished_bags",
    "qos_dict", "read_bag_info", "recover_bag", "write_bag",
]
