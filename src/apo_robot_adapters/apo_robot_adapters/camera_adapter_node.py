"""Camera adapter: a driver's sensor_msgs/Image (any encoding of apo_core.image_codec) or CompressedImage
(jpeg/png) -> rgb8 sensor_msgs/Image on the policy's camera topic, same header, same size.

Subscribes best effort (matches reliable and best-effort drivers) and publishes with the camera topic's
sensor QoS (newest frame wins). A frame that cannot be decoded is dropped with a throttled warning.
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from apo_core import topics
from apo_core.image_codec import rgb_to_image_fields
from apo_robot_adapters.config import CameraAdapterConfig
from apo_robot_adapters.image_conversion import ImageConverter
from apo_robot_adapters.node_config import load_adapter_config
from apo_ros.node import build_or_destroy, run_node
from apo_ros.qos import qos_for, qos_profile


class CameraAdapterNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_camera_adapter", automatically_declare_parameters_from_overrides=True, **kwargs)
        build_or_destroy(self, self._build)

    def _build(self):
        self.cfg = cfg = load_adapter_config(self, CameraAdapterConfig, "camera")
        self.converter = ImageConverter((cfg.depth_near_m, cfg.depth_far_m), cfg.use_cv_bridge)
        self.frames_in = self.frames_out = self.frames_dropped = 0
        self.pub = self.create_publisher(Image, cfg.output_topic, qos_for(topics.IMAGE))
        msg_type = CompressedImage if cfg.compressed else Image
        self.create_subscription(msg_type, cfg.input_topic, self._on_frame, qos_profile("sensor", 1))
        self.get_logger().info(
            f"camera adapter: {msg_type.__name__} on {cfg.input_topic} -> rgb8 on {cfg.output_topic} "
            f"({self.converter.backend})")

    def _on_frame(self, msg) -> None:
        self.frames_in += 1
        try:
            rgb = self.converter.compressed(msg) if self.cfg.compressed else self.converter.image(msg)
        except ValueError as exc:
            self.frames_dropped += 1
            self.get_logger().warning(f"frame dropped: {exc}", throttle_duration_sec=2.0)
            return
        out = Image(header=msg.header, **rgb_to_image_fields(rgb))
        self.pub.publish(out)
        self.frames_out += 1


def main(args=None):
    sys.exit(run_node(CameraAdapterNode, "apo_camera_adapter", args))


if __name__ == "__main__":
    main()
