"""Image augmentation for behaviour cloning: random shifts (pad with edge pixels, crop back).

A small VLA cloned from a few demonstrations learns the exact pixel positions of its training
images; shifting each training image by up to ``n`` pixels (a different shift per sample and step)
makes it rely on where things are relative to each other instead. Used for ``loss: bc`` only: the
preference losses compare log-probs with a reference cached on the unshifted images, and a shifted
policy input would add noise to every implicit reward.
"""

from __future__ import annotations

import numpy as np


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """(B, H, W, C) uint8 images, each shifted by an independent offset in [-max_shift, max_shift]^2."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"random_shift needs (B, H, W, C) images, got shape {images.shape}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return images
    b, h, w, _ = images.shape
    pad = max_shift
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy = rng.integers(0, 2 * pad + 1, size=b)
    dx = rng.integers(0, 2 * pad + 1, size=b)
    out = np.empty_like(images)
    for i in range(b):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out
