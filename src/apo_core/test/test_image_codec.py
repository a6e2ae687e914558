import cv2
import numpy as np
import pytest

from apo_core.image_codec import (
    ENCODINGS,
    ImageEncodingError,
    compressed_to_rgb,
    image_array,
    image_to_rgb,
    rgb_to_image_fields,
)

RNG = np.random.default_rng(0)


def test_roundtrip_and_encodings():
    img = RNG.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    f = rgb_to_image_fields(img)
    out = image_to_rgb(f["height"], f["width"], f["encoding"], f["step"], f["data"])
    assert np.array_equal(out, img) and out.flags.writeable
    bgr = img[..., ::-1].tobytes()
    assert np.array_equal(image_to_rgb(5, 7, "bgr8", 21, bgr), img)
    # padded rows (step > width * channels)
    padded = np.concatenate([img.reshape(5, 21), np.zeros((5, 3), np.uint8)], axis=1).tobytes()
    assert np.array_equal(image_to_rgb(5, 7, "rgb8", 24, padded), img)


def test_alpha_and_mono_8_bit():
    rgba = RNG.integers(0, 255, (4, 6, 4), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(4, 6, "rgba8", 24, rgba.tobytes()), rgba[..., :3])
    assert np.array_equal(image_to_rgb(4, 6, "bgra8", 24, rgba.tobytes()), rgba[..., 2::-1])
    mono = RNG.integers(0, 255, (4, 6), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(4, 6, "mono8", 6, mono.tobytes()), np.repeat(mono[..., None], 3, 2))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_16_bit_colour_and_mono_scale_like_opencv_convert_to(bigendian):
    img16 = RNG.integers(0, 65535, (3, 4, 3), dtype=np.uint16)
    raw = img16.astype(">u2" if bigendian else "<u2").tobytes()
    expected = cv2.convertScaleAbs(img16.astype(np.float64) * (255.0 / 65535.0))  # OpenCV's own rounding
    assert np.array_equal(image_to_rgb(3, 4, "rgb16", 24, raw, is_bigendian=bigendian), expected)
    assert np.array_equal(image_to_rgb(3, 4, "bgr16", 24, raw, is_bigendian=bigendian), expected[..., ::-1])
    mono = img16[..., 0]
    out = image_to_rgb(3, 4, "mono16", 8, mono.astype(">u2" if bigendian else "<u2").tobytes(),
                       is_bigendian=bigendian)
    assert np.array_equal(out[..., 1], expected[..., 0]) and np.array_equal(out[..., 0], out[..., 2])
    assert image_to_rgb(1, 2, "mono16", 4, np.array([0, 65535], "<u2").tobytes())[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("encoding, code", [("yuv422", cv2.COLOR_YUV2RGB_UYVY), ("uyvy", cv2.COLOR_YUV2RGB_UYVY),
                                            ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUYV), ("yuyv", cv2.COLOR_YUV2RGB_YUYV)])
def test_yuv422_matches_opencv_bit_for_bit(encoding, code):
    packed = RNG.integers(0, 256, (6, 8, 2), dtype=np.uint8)
    packed[0, :4] = [[0, 0], [255, 255], [128, 16], [128, 235]]  # the range's ends
    out = image_to_rgb(6, 8, encoding, 16, packed.tobytes())
    assert out.shape == (6, 8, 3) and np.array_equal(out, cv2.cvtColor(packed, code))


def test_depth_is_a_fixed_metres_to_grey_mapping_not_a_per_frame_stretch():
    mm = np.array([[0, 500, 1000], [2000, 3000, 65535]], np.uint16)  # 0 = no reading
    grey = image_to_rgb(2, 3, "16UC1", 6, mm.tobytes())[..., 0]
    assert grey.tolist() == [[0, 64, 128], [255, 255, 255]]  # round(255 * d / 2 m), clipped
    # the same depths in a frame with another span give the same grey (no normalisation)
    assert image_to_rgb(1, 1, "16UC1", 2, np.array([500], np.uint16).tobytes())[0, 0, 0] == 64
    m = np.array([[np.nan, 0.5, np.inf, 1.5]], np.float32)
    out = image_to_rgb(1, 4, "32FC1", 16, m.tobytes(), depth_range=(0.5, 1.5))
    assert out[0, :, 0].tolist() == [0, 0, 0, 255] and np.array_equal(out[..., 0], out[..., 2])
    with pytest.raises(ImageEncodingError, match="depth_range"):
        image_to_rgb(1, 4, "32FC1", 16, m.tobytes(), depth_range=(1.0, 1.0))


def test_passthrough_array_keeps_the_encodings_type():
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    arr = image_array(2, 3, "32FC1", 12, m.tobytes())
    assert arr.dtype == np.float32 and arr.shape == (2, 3, 1) and np.array_equal(arr[..., 0], m)
    assert set(ENCODINGS) >= {"rgb8", "bgr8", "mono16", "16UC1", "32FC1", "yuv422", "yuv422_yuy2", "uyvy"}


@pytest.mark.parametrize("ext, fmt", [(".png", "png"), (".png", "bgr8; png compressed bgr8"), (".jpg", "jpeg")])
def test_compressed_images_decode_to_rgb(ext, fmt):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red, flat: survives jpeg closely
    ok, enc = cv2.imencode(ext, rgb[..., ::-1])
    assert ok
    out = compressed_to_rgb(fmt, enc.tobytes())
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    if ext == ".png":
        assert np.array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb).max() <= 3


def test_compressed_grey_and_16_bit_png():
    grey16 = np.array([[0, 65535]], np.uint16)
    ok, enc = cv2.imencode(".png", grey16)
    assert ok
    assert compressed_to_rgb("png", enc.tobytes()).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_bad_images_rejected():
    with pytest.raises(ImageEncodingError, match="bayer_rggb8"):
        image_to_rgb(2, 2, "bayer_rggb8", 2, bytes(4))
    with pytest.raises(ImageEncodingError, match="too short"):
        image_to_rgb(4, 4, "rgb8", 12, bytes(10))
    with pytest.raises(ImageEncodingError, match="too short"):
        image_to_rgb(2, 2, "mono16", 2, bytes(8))  # step shorter than a 16-bit row
    with pytest.raises(ImageEncodingError, match="even width"):
        image_to_rgb(2, 3, "yuv422", 6, bytes(12))
    with pytest.raises(ImageEncodingError, match="positive"):
        image_to_rgb(0, 3, "rgb8", 9, b"")
    with pytest.raises(ImageEncodingError):
        rgb_to_image_fields(np.zeros((3, 3), np.uint8))
    with pytest.raises(ImageEncodingError, match="supported: jpeg, png"):
        compressed_to_rgb("16UC1; compressedDepth png", b"\x89PNG")
    with pytest.raises(ImageEncodingError, match="cannot decode"):
        compressed_to_rgb("jpeg", b"not a jpeg at all")
    with pytest.raises(ImageEncodingError, match="empty"):
        compressed_to_rgb("png", b"")
