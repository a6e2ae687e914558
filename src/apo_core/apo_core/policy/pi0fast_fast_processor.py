"""The physical-intelligence FAST action processor, read from its stored files (no remote code).

LeRobot's pi0-FAST loads its action tokenizer with ``AutoProcessor.from_pretrained(name,
trust_remote_code=True)``: the Hub repository (``physical-intelligence/fast``,
``lerobot/fast-action-tokenizer``) ships a Python file (``processing_action_tokenizer.py``) that
transformers would import and run. APO-ROS never runs it. What that processor does is small and fully
described by two stored files, so this module reimplements it from them:

- ``processor_config.json``: ``scale`` (coefficient scale, 10 in the public processor), ``min_token``
  (the smallest rounded scaled coefficient seen when the BPE was fitted, -354 in the public one),
  ``vocab_size``, and optionally ``time_horizon`` / ``action_dim`` (null in the public one);
- ``tokenizer.json``: a byte-level BPE (Hugging Face ``tokenizers``) over strings whose characters are
  the coefficients: character code = rounded scaled coefficient - ``min_token``.

Encoding one normalised chunk (H, D): orthonormal DCT-II over time (per dimension), ``round(scale * C)``
(numpy's ``around``: half to even), flatten row-major (low frequencies first, interleaved across
dimensions), ``chr(max(q - min_token, 0))`` per coefficient, BPE-encode the string.

Decoding, as LeRobot's ``PI0FastPolicy.decode_actions_with_fast`` (modeling_pi0_fast.py) does with
relaxed decoding: BPE-decode the ids to a string (ids the BPE does not know are skipped, as
``tokenizers`` does), ``ord(c) + min_token`` per character, truncate or zero-pad to H x D
coefficients, reshape (H, D), divide by ``scale``, inverse orthonormal DCT over time. Any failure
(a negative id, a non-integer id) gives zero coefficients, i.e. the all-zero normalised chunk, as in
LeRobot (which logs a warning); :meth:`PiFastProcessor.decode` says whether that happened.

The DCT matrix is :func:`apo_core.fast_tokenizer.dct_matrix` (APO-ROS's own FAST tokenizer does the
same transform with its own alphabet and file format; the two formats are not interchangeable).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from apo_core.errors import ConfigError
from apo_core.fast_tokenizer import dct_matrix

PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
REQUIRED_FILES = (PROCESSOR_CONFIG, TOKENIZER_FILE)


def missing_files(directory) -> list[str]:
    """The stored files of a FAST processor that ``directory`` lacks (empty: it looks complete)."""
    directory = Path(directory)
    return [name for name in REQUIRED_FILES if not (directory / name).is_file()]


class PiFastProcessor:
    """A FAST processor directory in physical-intelligence's stored format (see the module docstring)."""

    def __init__(self, bpe, scale: float, min_token: int, vocab_size: int | None = None,
                 time_horizon: int | None = None, action_dim: int | None = None, directory: Path | None = None):
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            raise ConfigError(f"FAST processor scale must be a positive number, got {scale!r}")
        if not isinstance(min_token, int) or isinstance(min_token, bool):
            raise ConfigError(f"FAST processor min_token must be an integer, got {min_token!r}")
        self.bpe = bpe
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.vocab_size = int(vocab_size) if vocab_size is not None else bpe.get_vocab_size()
        self.time_horizon = time_horizon
        self.action_dim = action_dim
        self.directory = directory

    @classmethod
    def from_directory(cls, directory) -> PiFastProcessor:
        """Read ``processor_config.json`` and ``tokenizer.json`` (nothing else is read, no code is run)."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        absent = missing_files(directory)
        if absent:
            raise ConfigError(f"FAST processor directory {directory} lacks {', '.join(absent)}")
        try:
            cfg = json.loads((directory / PROCESSOR_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{directory / PROCESSOR_CONFIG} is not valid JSON: {exc}") from exc
        if not isinstance(cfg, dict):
            raise ConfigError(f"{directory / PROCESSOR_CONFIG} must hold a JSON object")
        for key in ("scale", "min_token"):
            if key not in cfg:
                raise ConfigError(f"{directory / PROCESSOR_CONFIG} has no {key!r}")
        for key in ("vocab_size", "time_horizon", "action_dim"):
            value = cfg.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{directory / PROCESSOR_CONFIG}: {key} must be a positive integer or null, "
                                  f"got {value!r}")
        try:
            bpe = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ConfigError(f"{directory / TOKENIZER_FILE} is not a Hugging Face tokenizers file: {exc}") from exc
        return cls(bpe, cfg["scale"], cfg["min_token"], cfg.get("vocab_size"), cfg.get("time_horizon"),
                   cfg.get("action_dim"), directory)

    def encode(self, normalised_chunk) -> list[int]:
        """One normalised chunk (H, D) -> FAST ids (what the processor's ``__call__`` gives for it)."""
        x = np.asarray(normalised_chunk, dtype=np.float64)
        if x.ndim != 2 or not np.all(np.isfinite(x)):
            raise ValueError(f"need one finite (H, D) chunk, got shape {x.shape}")
        q = np.around(self.scale * (dct_matrix(x.shape[0]) @ x)).reshape(-1)
        text = "".join(map(chr, np.maximum(q - self.min_token, 0).astype(int).tolist()))
        return list(self.bpe.encode(text).ids)

    def decode(self, token_ids, time_horizon: int, action_dim: int) -> tuple[np.ndarray, bool]:
        """FAST ids -> (normalised chunk (H, D), ok). ``ok`` is False when the ids did not decode and the
        chunk is LeRobot's fallback (zero coefficients: all zeros)."""
        n = int(time_horizon) * int(action_dim)
        ok = True
        try:
            ids = [int(i) for i in np.asarray(token_ids).reshape(-1).tolist()]
            if any(i != j for i, j in zip(ids, np.asarray(token_ids).reshape(-1).tolist(), strict=True)):
                raise ValueError("token ids must be integers")
            text = self.bpe.decode(ids, skip_special_tokens=False)
            coeffs = np.array([ord(c) for c in text], dtype=np.float64) + self.min_token
            coeffs = np.concatenate([coeffs[:n], np.zeros(max(0, n - coeffs.size))])
            coeffs = coeffs.reshape(int(time_horizon), int(action_dim))
        except Exception:  # as LeRobot: any decode failure gives zero coefficients
            coeffs = np.zeros((int(time_horizon), int(action_dim)))
            ok = False
        return dct_matrix(int(time_horizon)).T @ (coeffs / self.scale), ok
