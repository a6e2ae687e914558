"""sensor_msgs/Image and CompressedImage fields <-> numpy RGB arrays, without ROS (works on deserialised
messages of any library: rclpy, rosbags, mcap).

What a policy gets from each encoding (:func:`image_to_rgb`), chosen to equal what cv_bridge's
``imgmsg_to_cv2(msg, "rgb8")`` returns, so the adapter gives the same arrays with or without a ROS install:

* ``rgb8 bgr8 rgba8 bgra8 mono8``: the colours (alpha dropped, grey copied to the three channels).
* ``rgb16 bgr16 rgba16 bgra16 mono16``: the same, each value scaled by 255/65535 and rounded.
* ``yuv422``/``uyvy`` (UYVY byte order) and ``yuv422_yuy2``/``yuyv`` (YUYV): BT.601 video range, with
  OpenCV's fixed-point arithmetic (``cv2.COLOR_YUV2RGB_UYVY`` / ``_YUYV``), bit for bit.
* depth ``16UC1`` (millimetres, REP 118) and ``32FC1`` (metres): cv_bridge has no colour conversion for
  these, so the mapping is ours and fixed, never normalised per frame (a per-frame stretch would change a
  pixel's meaning from one frame to the next): grey = round(255 * (d - near) / (far - near)) clipped to
  [0, 255], with ``near``/``far`` in metres (default 0 to 2 m); no reading (0, NaN, inf) is 0.

Compressed images (jpeg, png: :func:`compressed_to_rgb`) are decoded with OpenCV, imported on use so
that raw images need numpy only.
"""

from __future__ import annotations

import numpy as np

# Encodings the original codec handled (other modules list them); ENCODINGS is the full table.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

# encoding -> (channels, numpy dtype of one channel)
ENCODINGS: dict[str, tuple[int, str]] = {
    **{name: (ch, "u1") for name, ch in CHANNELS.items()},
    "rgb16": (3, "u2"), "bgr16": (3, "u2"), "rgba16": (4, "u2"), "bgra16": (4, "u2"), "mono16": (1, "u2"),
    "16UC1": (1, "u2"), "32FC1": (1, "f4"),
    "yuv422": (2, "u1"), "uyvy": (2, "u1"), "yuv422_yuy2": (2, "u1"), "yuyv": (2, "u1"),
}
DEPTH_ENCODINGS = ("16UC1", "32FC1")
YUV_ENCODINGS = {"yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv"}
DEFAULT_DEPTH_RANGE = (0.0, 2.0)  # metres mapped to grey 0..255


class ImageEncodingError(ValueError):
    pass


def image_array(height: int, width: int, encoding: str, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """The message's pixels as an (H, W, C) array of the encoding's own type (cv_bridge's "passthrough"),
    row padding removed, in native byte order; a view of ``data`` where possible."""
    if encoding not in ENCODINGS:
        raise ImageEncodingError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    ch, kind = ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image size must be positive, got {height}x{width}")
    if encoding in YUV_ENCODINGS and width % 2:
        raise ImageEncodingError(f"{encoding} needs an even width (two pixels share U and V), got {width}")
    dtype = np.dtype(kind).newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * ch * dtype.itemsize
    buf = _byte_view(data)
    if step < row_bytes or buf.size < step * height:
        raise ImageEncodingError(
            f"image data too short: {buf.size} bytes for {height}x{width} {encoding} with step {step}")
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, ch)
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def _byte_view(data) -> np.ndarray:
    """The message's bytes as a uint8 array without copying them when they are a buffer (bytes, bytearray,
    memoryview, numpy, and rclpy's ``array.array('B')``); a list of ints is copied once."""
    if isinstance(data, (list, tuple)):
        return np.array(data, dtype=np.uint8)
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        return np.frombuffer(bytes(data), dtype=np.uint8)
    return np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, dtype=np.uint8)


def image_to_rgb(height: int, width: int, encoding: str, step: int, data, *, is_bigendian: int = 0,
                 depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE, copy: bool = True) -> np.ndarray:
    """Decode an Image message's fields to an (H, W, 3) uint8 RGB array (a copy; see the module doc).

    ``copy=False``: an ``rgb8`` image without row padding comes back as a view of ``data`` (no copy at all;
    valid while ``data`` lives, and changed if ``data`` is); every other case is converted as usual."""
    pixels = image_array(height, width, encoding, step, data, is_bigendian)
    if not copy and encoding == "rgb8":
        return pixels
    return array_to_rgb(pixels, encoding, depth_range=depth_range)


def array_to_rgb(pixels: np.ndarray, encoding: str, *, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE
                 ) -> np.ndarray:
    """An (H, W[, C]) array in ``encoding`` (as :func:`image_array` or cv_bridge passthrough gives it) ->
    (H, W, 3) uint8 RGB, a new array."""
    if encoding not in ENCODINGS:
        raise ImageEncodingError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if encoding in DEPTH_ENCODINGS:
        return depth_to_rgb(pixels[..., 0], encoding, depth_range)
    if encoding in YUV_ENCODINGS:
        return _yuv422_to_rgb(pixels, YUV_ENCODINGS[encoding])
    if pixels.dtype == np.uint16:
        # cv_bridge's 16 -> 8 bit step: convertTo(CV_8U, 255/65535), rounded (never a tie: 255/65535 = 1/257)
        pixels = np.rint(pixels.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        return pixels[..., 2::-1].copy()
    return pixels[..., :3].copy()  # a writable copy, independent of the message buffer


def depth_to_rgb(depth: np.ndarray, encoding: str, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE
                 ) -> np.ndarray:
    """16UC1 (mm) or 32FC1 (m) depth -> grey RGB: near..far metres linearly to 0..255, no reading -> 0."""
    near, far = (float(v) for v in depth_range)
    if not (np.isfinite(near) and np.isfinite(far) and 0.0 <= near < far):
        raise ImageEncodingError(f"depth_range must be 0 <= near < far metres, got {depth_range!r}")
    metres = depth.astype(np.float64) / 1000.0 if encoding == "16UC1" else depth.astype(np.float64)
    valid = np.isfinite(metres) & (metres > 0)
    scaled = np.where(valid, (np.nan_to_num(metres, nan=0.0, posinf=0.0, neginf=0.0) - near) * (255.0 / (far - near)), 0.0)
    grey = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


# OpenCV's BT.601 fixed-point YUV -> RGB coefficients (20-bit), so results match cv2.cvtColor exactly.
_SHIFT = 20
_CY, _CUB, _CUG, _CVG, _CVR = 1220542, 2116026, -409993, -852492, 1673527


def _yuv422_to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 2) packed 4:2:2 bytes (pairs of pixels share U and V) -> (H, W, 3) uint8 RGB."""
    h, w = pixels.shape[:2]
    quads = pixels.reshape(h, w // 2, 4).astype(np.int64)
    if order == "uyvy":
        u, y0, v, y1 = (quads[..., i] for i in range(4))
    else:  # yuyv
        y0, u, y1, v = (quads[..., i] for i in range(4))
    y = np.stack([y0, y1], axis=-1)  # (h, w/2, 2)
    u, v = (u - 128)[..., None], (v - 128)[..., None]
    yy = np.maximum(y - 16, 0) * _CY
    half = 1 << (_SHIFT - 1)
    r = (yy + _CVR * v + half) >> _SHIFT
    g = (yy + _CVG * v + _CUG * u + half) >> _SHIFT
    b = (yy + _CUB * u + half) >> _SHIFT
    rgb = np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)  # (h, w/2, 2, 3)
    return rgb.reshape(h, w, 3)


def compressed_to_rgb(fmt: str, data) -> np.ndarray:
    """A CompressedImage's ``format`` and ``data`` (jpeg or png) -> (H, W, 3) uint8 RGB, decoded by OpenCV.

    ``format`` is e.g. "jpeg", "png" or image_transport's "bgr8; jpeg compressed bgr8"; the decoder reads
    the bytes' own signature, the format only has to name jpeg or png (depth formats are refused).
    """
    text = (fmt or "").lower()
    if "compresseddepth" in text or not any(k in text for k in ("jpeg", "jpg", "png")):
        raise ImageEncodingError(f"unsupported compressed image format {fmt!r} (supported: jpeg, png)")
    try:
        import cv2
    except ImportError as exc:
        raise ImageEncodingError("decoding a compressed image needs OpenCV (pip install opencv-python)") from exc
    buf = np.frombuffer(bytes(data) if not isinstance(data, (bytes, bytearray, np.ndarray)) else data, np.uint8)
    if buf.size == 0:
        raise ImageEncodingError(f"empty {fmt!r} compressed image")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageEncodingError(f"cannot decode {buf.size} bytes as a {fmt!r} image")
    if decoded.dtype == np.uint16:  # a 16-bit png
        decoded = np.rint(decoded.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if decoded.ndim == 2:
        return np.repeat(decoded[..., None], 3, axis=2)
    return decoded[..., 2::-1].copy()  # OpenCV decodes to BGR(A)


def rgb_to_image_fields(image: np.ndarray) -> dict:
    """(H, W, 3) uint8 -> dict of Image fields (height, width, encoding, step, data)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageEncodingError(f"expected an (H, W, 3) uint8 image, got {arr.shape} {arr.dtype}")
    h, w, _ = arr.shape
    return {"height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": w * 3,
            "data": np.ascontiguousarray(arr).tobytes()}
