"""small_vla.preprocess_images: the inference path reuses one float buffer per thread and reads read-only
pixels in place, with exactly the values (and layout) of a fresh conversion; training gets fresh tensors."""

import threading
import warnings

import numpy as np
import torch

from apo_core.policy import Observation
from apo_core.policy.small_vla import SmallVLAPolicy, preprocess_images

RNG = np.random.default_rng(2)
TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


def _fresh(images, size):
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def test_inference_reuses_one_buffer_with_the_fresh_values():
    a, b = (RNG.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    with torch.inference_mode():
        xa = preprocess_images(a, 32)
        ptr, first = xa.data_ptr(), xa.clone()
        xb = preprocess_images(b, 32)
    assert xb.data_ptr() == ptr  # the same memory: no allocation per frame
    assert torch.equal(first, _fresh(a, 32)) and torch.equal(xb, _fresh(b, 32))
    assert xb.stride()[1:] == _fresh(b, 32).stride()[1:]


def test_each_thread_has_its_own_buffer_and_training_gets_fresh_tensors():
    img = RNG.integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    ptrs = []

    def convert():
        with torch.inference_mode():
            ptrs.append(preprocess_images(img[:1, :32, :32], 32).data_ptr())

    convert()
    t = threading.Thread(target=convert)
    t.start()
    t.join()
    assert ptrs[0] != ptrs[1]
    x, y = preprocess_images(img, 32), preprocess_images(img, 32)  # training path (resized here)
    assert x.data_ptr() != y.data_ptr() and torch.equal(x, _fresh(img, 32)) and x.requires_grad is False


def test_read_only_pixels_are_used_in_place_without_warnings():
    policy = SmallVLAPolicy.create(state_dim=3, seed=1, **TINY)
    img = RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    read_only = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(32, 32, 3)  # as a message's bytes are
    assert not read_only.flags.writeable
    state = np.array([0.1, -0.2, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = policy.predict(Observation(read_only, "lift the red cube", state))
    assert np.array_equal(got, policy.predict(Observation(img.copy(), "lift the red cube", state)))
