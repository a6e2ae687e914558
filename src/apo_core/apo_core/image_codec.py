"""sensor_msgs/Image fields <-> numpy RGB arrays, without ROS (works on deserialised messages of any
library: rclpy, rosbags, mcap)."""

from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageEncodingError(ValueError):
    pass


def image_to_rgb(height: int, width: int, encoding: str, step: int, data) -> np.ndarray:
    """Decode an Image message's fields to an (H, W, 3) uint8 RGB array (a copy)."""
    if encoding not in CHANNELS:
        raise ImageEncodingError(f"unsupported image encoding {encoding!r} (supported: {sorted(CHANNELS)})")
    ch = CHANNELS[encoding]
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, np.ndarray)) else data, dtype=np.uint8)
    if step < width * ch or buf.size < step * height:
        raise ImageEncodingError(
            f"image data too short: {buf.size} bytes for {height}x{width} {encoding} with step {step}")
    rows = buf[: step * height].reshape(height, step)[:, : width * ch].reshape(height, width, ch)
    if encoding == "mono8":
        return np.repeat(rows, 3, axis=2)
    if encoding.startswith("bgr"):
        return rows[..., 2::-1].copy()
    return rows[..., :3].copy()  # a writable copy, independent of the message buffer


def rgb_to_image_fields(image: np.ndarray) -> dict:
    """(H, W, 3) uint8 -> dict of Image fields (height, width, encoding, step, data)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageEncodingError(f"expected an (H, W, 3) uint8 image, got {arr.shape} {arr.dtype}")
    h, w, _ = arr.shape
    return {"height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": w * 3,
            "data": np.ascontiguousarray(arr).tobytes()}
