"""OpenVLA-compatible action tokenizer: 256 uniform bins over [-1, 1] on the last vocabulary ids.

Encoding: ``token_id = vocab_size - digitize(a, bins)`` with ``bins = linspace(-1, 1, n_bins)``,
so the action tokens are the last ``n_bins`` ids of the language model vocabulary. Decoding maps a
token back to the centre of its bin. The round trip is exact to half a bin width.
"""

from __future__ import annotations

import numpy as np

from apo_core.normalization import check_finite


class ActionTokenizer:
    def __init__(self, vocab_size: int, n_bins: int = 256, min_action: float = -1.0, max_action: float = 1.0):
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if vocab_size <= n_bins:
            raise ValueError(f"vocab_size {vocab_size} must exceed n_bins {n_bins}")
        if not max_action > min_action:
            raise ValueError("max_action must be greater than min_action")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.min_action = float(min_action)
        self.max_action = float(max_action)
        self.bins = np.linspace(min_action, max_action, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def bin_width(self) -> float:
        return float(self.bins[1] - self.bins[0])

    @property
    def first_action_token(self) -> int:
        """Smallest token id an action can be encoded to (only max_action itself maps there)."""
        return self.vocab_size - self.n_bins

    @property
    def action_token_ids(self) -> np.ndarray:
        """Every token id that decodes to an action (ascending)."""
        return np.arange(self.first_action_token, self.vocab_size)

    def encode(self, actions) -> np.ndarray:
        """Normalised actions (any shape) -> token ids (same shape, int64)."""
        arr = check_finite(actions, "normalised action")
        arr = np.clip(arr, self.min_action, self.max_action)
        # As OpenVLA: np.digitize gives 1..n_bins on [min, max] (n_bins only for max itself), so the
        # ids used are the last n_bins of the vocabulary.
        idx = np.digitize(arr, self.bins)
        return (self.vocab_size - idx).astype(np.int64)

    def decode(self, token_ids) -> np.ndarray:
        """Token ids -> bin-centre actions in [min_action, max_action]."""
        ids = np.asarray(token_ids, dtype=np.int64)
        outside = ~self.is_action_token(ids)
        if np.any(outside):
            raise ValueError(
                f"token id(s) {ids[outside][:5].tolist()} are outside the action range "
                f"[{self.first_action_token}, {self.vocab_size - 1}]"
            )
        # As OpenVLA: bin index n_bins (max_action) decodes to the last bin centre.
        idx = np.clip(self.vocab_size - ids - 1, 0, self.n_bins - 2)
        return self.bin_centers[idx]

    def is_action_token(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids)
        return (ids >= self.first_action_token) & (ids < self.vocab_size)
