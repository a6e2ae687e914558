"""image_to_rgb reads a message's buffer in place: rclpy's array.array without a bytes() copy, and with
copy=False an rgb8 image is a view of it (the policy node's hot path); every other case still converts."""

import array

import numpy as np
import pytest

from apo_core.image_codec import ImageEncodingError, image_to_rgb, rgb_to_image_fields

RNG = np.random.default_rng(1)


def _as_rclpy_data(img: np.ndarray) -> array.array:
    return array.array("B", rgb_to_image_fields(img)["data"])  # what rclpy gives for sensor_msgs/Image.data


def test_rgb8_view_shares_the_message_buffer():
    img = RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    data = _as_rclpy_data(img)
    view = image_to_rgb(6, 5, "rgb8", 15, data, copy=False)
    assert np.array_equal(view, img)
    assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))
    data[0] = (int(img[0, 0, 0]) + 1) % 256  # a view: it follows the buffer
    assert view[0, 0, 0] == data[0]
    copied = image_to_rgb(6, 5, "rgb8", 15, data)  # the default stays an independent, writable copy
    assert not np.shares_memory(copied, view) and copied.flags.writeable and np.array_equal(copied, view)


def test_no_copy_request_still_converts_other_encodings_and_padded_rows():
    img = RNG.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    bgr = array.array("B", img[..., ::-1].tobytes())
    out = image_to_rgb(4, 6, "bgr8", 18, bgr, copy=False)
    assert np.array_equal(out, img)
    padded = array.array("B", np.concatenate([img.reshape(4, 18), np.zeros((4, 2), np.uint8)], axis=1).tobytes())
    assert np.array_equal(image_to_rgb(4, 6, "rgb8", 20, padded, copy=False), img)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array", "list", "ndarray"])
def test_every_buffer_kind_decodes_the_same(kind):
    img = RNG.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    raw = rgb_to_image_fields(img)["data"]
    data = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw), "array": array.array("B", raw),
            "list": list(raw), "ndarray": np.frombuffer(raw, np.uint8).reshape(3, 12)}[kind]
    assert np.array_equal(image_to_rgb(3, 4, "rgb8", 12, data), img)
    assert np.array_equal(image_to_rgb(3, 4, "rgb8", 12, data, copy=False), img)


def test_short_buffer_is_refused_without_copy_too():
    with pytest.raises(ImageEncodingError, match="too short"):
        image_to_rgb(4, 4, "rgb8", 12, array.array("B", bytes(40)), copy=False)
