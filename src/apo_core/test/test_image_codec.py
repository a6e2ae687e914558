import numpy as np
import pytest

from apo_core.image_codec import ImageEncodingError, image_to_rgb, rgb_to_image_fields


def test_roundtrip_and_encodings():
    img = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    f = rgb_to_image_fields(img)
    out = image_to_rgb(f["height"], f["width"], f["encoding"], f["step"], f["data"])
    assert np.array_equal(out, img) and out.flags.writeable
    bgr = img[..., ::-1].tobytes()
    assert np.array_equal(image_to_rgb(5, 7, "bgr8", 21, bgr), img)
    # padded rows (step > width * channels)
    padded = np.concatenate([img.reshape(5, 21), np.zeros((5, 3), np.uint8)], axis=1).tobytes()
    assert np.array_equal(image_to_rgb(5, 7, "rgb8", 24, padded), img)


def test_bad_images_rejected():
    with pytest.raises(ImageEncodingError, match="yuv422"):
        image_to_rgb(2, 2, "yuv422", 4, bytes(8))
    with pytest.raises(ImageEncodingError, match="too short"):
        image_to_rgb(4, 4, "rgb8", 12, bytes(10))
    with pytest.raises(ImageEncodingError):
        rgb_to_image_fields(np.zeros((3, 3), np.uint8))
