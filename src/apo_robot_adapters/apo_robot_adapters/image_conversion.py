"""Camera messages -> (H, W, 3) uint8 RGB: cv_bridge when a ROS 2 install provides it, else apo_core's codec.

Both give the same arrays (apo_core.image_codec matches cv_bridge's conversions; depth images, which
cv_bridge does not turn into colour, take cv_bridge's passthrough array through the codec's fixed
depth mapping). Compressed images are decoded by OpenCV either way.
"""

from __future__ import annotations

import numpy as np

from apo_core.image_codec import DEPTH_ENCODINGS, array_to_rgb, compressed_to_rgb, image_to_rgb


def load_cv_bridge():
    """A CvBridge, or None where cv_bridge is not installed (it is not on PyPI)."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


class ImageConverter:
    def __init__(self, depth_range: tuple[float, float], use_cv_bridge: bool = True):
        self.depth_range = depth_range
        self.bridge = load_cv_bridge() if use_cv_bridge else None

    @property
    def backend(self) -> str:
        return "cv_bridge" if self.bridge is not None else "apo_core.image_codec"

    def image(self, msg) -> np.ndarray:
        """A sensor_msgs/Image -> RGB (ValueError, e.g. ImageEncodingError, for one that cannot be read)."""
        if self.bridge is None:
            return image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                                is_bigendian=msg.is_bigendian, depth_range=self.depth_range)
        return bridge_image_to_rgb(self.bridge, msg, self.depth_range)

    @staticmethod
    def compressed(msg) -> np.ndarray:
        return compressed_to_rgb(msg.format, msg.data)


def bridge_image_to_rgb(bridge, msg, depth_range) -> np.ndarray:
    """cv_bridge's conversion: rgb8 directly, depth through passthrough + the codec's depth mapping."""
    try:
        if msg.encoding in DEPTH_ENCODINGS:
            return array_to_rgb(bridge.imgmsg_to_cv2(msg, "passthrough"), msg.encoding, depth_range=depth_range)
        return np.array(bridge.imgmsg_to_cv2(msg, "rgb8"), dtype=np.uint8, copy=True)
    except ValueError:
        raise
    except Exception as exc:  # cv_bridge's CvBridgeError and OpenCV errors: not a ValueError
        raise ValueError(f"cv_bridge cannot convert a {msg.encoding!r} image: {exc}") from exc
