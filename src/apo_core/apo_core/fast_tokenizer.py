"""FAST action tokenizer (π0-FAST style): a chunk of actions -> DCT -> rounded coefficients -> BPE ids.

Why: one token per action dimension and step (the OpenVLA tokenizer in ``apo_core.action_tokenizer``) spends
H x D tokens on a chunk whose consecutive actions are nearly equal. A discrete cosine transform over time
puts almost all of a smooth chunk's content in a few low-frequency coefficients; after scaling and rounding
most coefficients are 0, and byte-pair encoding trained on the demonstrations packs the common runs into
single tokens (Pertsch et al., "FAST: Efficient Action Tokenization for Vision-Language-Action Models").

Encoding one chunk of H actions with D dimensions:

1. normalise to [-1, 1] with the dataset's :class:`~apo_core.normalization.ActionStats` (the same
   statistics the OpenVLA tokenizer uses; ``stats=None`` means the chunk is already normalised);
2. orthonormal DCT-II of every dimension over time: ``C = M @ X`` with ``M`` the (H, H) DCT matrix;
3. ``Q = rint(scale * C)`` (integers);
4. flatten row-major, i.e. low frequencies first, interleaved across dimensions (coefficient 0 of every
   dimension, then coefficient 1, ...), so a sequence cut short loses only high frequencies;
5. map every integer ``q`` to the character ``chr(CHAR_BASE + q - min_token)`` and encode the string with a
   character-level BPE (Hugging Face ``tokenizers``; no normaliser, no pre-tokeniser, so the encoding is
   lossless).

Unlike the public FAST processor, ``min_token`` is not the smallest coefficient seen in training but the
smallest one possible: for a column ``x`` in [-1, 1]^H, ``|c_k| <= ||x||_2 <= sqrt(H)``, so the alphabet
``[-ceil(scale*sqrt(H)), +ceil(scale*sqrt(H))]`` holds every chunk, including ones unlike the demonstrations,
and encoding never has to clip a coefficient.

Decoding reverses it: ids -> characters -> integers -> (H, D) coefficients -> ``/ scale`` -> inverse DCT
(``M.T @ C``) -> clip to [-1, 1] -> unnormalise. Quantisation bound: the rounding error of every coefficient
is at most ``0.5 / scale``, so the error of element ``t`` is at most ``0.5 / scale * sum_k |M[k, t]|``, and
``sum_k |M[k, t]| <= sqrt(H)`` (Cauchy-Schwarz on a unit column). :attr:`FastActionTokenizer.quantisation_bound`
is ``0.5 / scale`` times the exact ``max_t`` of that sum (0.93 sqrt(H) at H = 10, tending to
2 sqrt(2) / pi sqrt(H) ~ 0.90 sqrt(H)); clipping to [-1, 1] only reduces it. At the default scale 10
and H = 10 that is 0.147 in normalised units; measured on scripted Lift demos
(``bench/bench_fast_tokenizer.py``): at most 0.09, with 12 (training episodes) to 18 (held-out
episodes) tokens per chunk of 70 values.

Malformed sequences (unknown ids, no ids, a number of coefficients other than H x D, non-integer ids) raise
:class:`FastDecodeError`; with ``on_error="zeros"`` the decoder returns the hold chunk instead (raw zero
actions: no motion; the arbiter sets the gripper), never NaN or an action outside the statistics' range.
``relaxed=True`` zero-fills a short sequence's missing (high-frequency) coefficients and drops extra ones.

How the chunked policy (the rest of issue 11, not in this module) uses it: the BPE ids ``0 .. vocab_size-1``
map onto the last ``vocab_size`` ids of the language model's vocabulary (as the OpenVLA tokenizer does with
its 256 bins); the model generates action tokens after the prompt until end-of-sequence (at most about
``H * D`` tokens); the log-probability of a chunk is the sum over its token sequence (BC/DPO/KTO/APO); the
policy decodes with ``on_error="zeros", relaxed=True`` so a bad generation holds instead of moving, and
executes the chunk receding-horizon (or with temporal ensembling) while publishing one action per control
step. ``save_pretrained`` writes the tokenizer next to the model; ``from_pretrained`` reads it back from a
local directory only (two JSON files; no remote code, no download).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from apo_core.errors import ApoError, ConfigError, InvalidActionError, MissingPathError
from apo_core.normalization import ActionStats, check_finite

CONFIG_FILENAME = "fast_tokenizer_config.json"
TOKENIZER_FILENAME = "tokenizer.json"
FORMAT_VERSION = 1
# First code point of the alphabet: printable Latin Extended, so tokenizer.json stays readable and no
# coefficient maps to whitespace or a control character.
CHAR_BASE = 0x100
# The alphabet must stay below the UTF-16 surrogates, which are not valid characters.
MAX_ALPHABET = 0xD800 - CHAR_BASE
ON_ERROR = ("raise", "zeros")
# Normalised actions may exceed [-1, 1] by float rounding only.
RANGE_TOLERANCE = 1e-9


class FastTokenizerError(ApoError, ValueError):
    """The FAST tokenizer cannot be built or used as asked (bad corpus, parameters or saved files)."""


class FastDecodeError(FastTokenizerError):
    """A token sequence does not decode to an action chunk (unknown id, empty, wrong length)."""


def dct_matrix(horizon: int) -> np.ndarray:
    """Orthonormal DCT-II matrix M (H, H): coefficients ``M @ x``, inverse ``M.T @ c``."""
    if horizon < 1:
        raise FastTokenizerError(f"horizon must be at least 1, got {horizon}")
    k = np.arange(horizon)[:, None]
    t = np.arange(horizon)[None, :]
    m = np.sqrt(2.0 / horizon) * np.cos(np.pi * (2 * t + 1) * k / (2 * horizon))
    m[0] = 1.0 / np.sqrt(horizon)
    return m


def coefficient_bound(horizon: int, scale: float) -> int:
    """Largest |rounded scaled coefficient| any chunk in [-1, 1]^H can give (see the module docstring)."""
    return int(math.ceil(scale * math.sqrt(horizon)))


def chunks_from_actions(actions, horizon: int, stride: int = 1) -> np.ndarray:
    """Windows of ``horizon`` consecutive actions (N, H, D) starting every ``stride`` steps.

    Only windows that lie wholly inside the episode are returned (a tail shorter than H is dropped)."""
    arr = check_finite(actions, "actions")
    if arr.ndim != 2:
        raise InvalidActionError(f"actions must be (T, D), got shape {arr.shape}")
    if horizon < 1 or stride < 1:
        raise FastTokenizerError(f"horizon and stride must be at least 1, got {horizon} and {stride}")
    starts = range(0, len(arr) - horizon + 1, stride)
    if not starts:
        return np.zeros((0, horizon, arr.shape[1]))
    return np.stack([arr[s:s + horizon] for s in starts])


def chunks_from_dataset(path, horizon: int, stride: int = 1) -> np.ndarray:
    """Raw action chunks (N, H, D) from every episode of an ``apo_core.dataset`` HDF5 file.

    Reads only the ``actions`` of each episode (not the images). ``stride=1`` gives every window (the
    corpus a policy sees when it re-plans every step), ``stride=horizon`` non-overlapping chunks."""
    import h5py

    from apo_core.dataset import DatasetError, sorted_episode_names

    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"dataset not found: {path}")
    chunks = []
    with h5py.File(path, "r") as f:
        names = sorted_episode_names(f)
        if not names:
            raise DatasetError(f"{path} has no episodes under data/")
        for name in names:
            if "actions" not in f["data"][name]:
                raise DatasetError(f"{path}: episode data/{name} has no actions")
            part = chunks_from_actions(f["data"][name]["actions"][()], horizon, stride)
            if len(part):
                chunks.append(part)
    if not chunks:
        raise FastTokenizerError(f"{path}: no episode has {horizon} or more steps, so there are no chunks")
    return np.concatenate(chunks, axis=0)


class FastActionTokenizer:
    """DCT + BPE tokenizer for action chunks of a fixed horizon and action dimension.

    Build one with :meth:`fit` (trains the BPE) or :meth:`from_pretrained` (reads a saved directory)."""

    def __init__(self, bpe, horizon: int, action_dim: int, scale: float = 10.0, stats: ActionStats | None = None,
                 observed_range: tuple[int, int] | None = None):
        _check_params(horizon, action_dim, scale)
        self.horizon = int(horizon)
        self.action_dim = int(action_dim)
        self.scale = float(scale)
        if stats is not None and stats.dim != self.action_dim:
            raise FastTokenizerError(f"action statistics have {stats.dim} dimensions, the tokenizer {action_dim}")
        self.stats = stats
        self.observed_range = observed_range
        self.max_coefficient = coefficient_bound(self.horizon, self.scale)
        self.min_token = -self.max_coefficient
        self._dct = dct_matrix(self.horizon)
        self.bpe = bpe
        self._id_to_ints = _vocab_table(bpe, self.min_token, self.max_coefficient)

    # --- properties ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of BPE ids (ids are 0 .. vocab_size - 1)."""
        return len(self._id_to_ints)

    @property
    def num_coefficients(self) -> int:
        return self.horizon * self.action_dim

    @property
    def quantisation_bound(self) -> float:
        """Largest error per normalised element a round trip can make (<= 0.5 / scale * sqrt(H))."""
        return 0.5 / self.scale * float(np.max(np.abs(self._dct).sum(axis=0)))

    # --- training -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, chunks, stats: ActionStats | None = None, scale: float = 10.0, vocab_size: int = 1024,
            min_frequency: int = 2) -> FastActionTokenizer:
        """Train the BPE on raw action chunks (N, H, D), normalised with ``stats`` (None: already normalised)."""
        from tokenizers import Tokenizer, models, trainers

        arr = check_finite(chunks, "action chunks")
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise FastTokenizerError(f"need a non-empty (N, H, D) array of action chunks, got shape {arr.shape}")
        _, horizon, action_dim = arr.shape
        _check_params(horizon, action_dim, scale)
        bound = coefficient_bound(horizon, scale)
        alphabet = [chr(CHAR_BASE + i) for i in range(2 * bound + 1)]
        if vocab_size < len(alphabet):
            raise FastTokenizerError(f"vocab_size {vocab_size} is smaller than the {len(alphabet)} coefficient values "
                                     f"of horizon {horizon} at scale {scale}; raise vocab_size or lower scale")
        if min_frequency < 1:
            raise FastTokenizerError(f"min_frequency must be at least 1, got {min_frequency}")
        if stats is not None and stats.dim != action_dim:
            raise FastTokenizerError(f"action statistics have {stats.dim} dimensions, the chunks {action_dim}")
        normalised = arr if stats is None else stats.normalise(arr)
        _check_normalised(normalised)
        dct = dct_matrix(horizon)
        ints = np.rint(scale * np.einsum("kt,ntd->nkd", dct, normalised)).astype(np.int64)
        strings = ["".join(map(chr, row)) for row in (ints.reshape(len(ints), -1) + bound + CHAR_BASE).tolist()]
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency), show_progress=False,
                                      initial_alphabet=alphabet, special_tokens=[])
        bpe.train_from_iterator(strings, trainer=trainer)
        return cls(bpe, horizon, action_dim, scale, stats, (int(ints.min()), int(ints.max())))

    # --- encoding -----------------------------------------------------------------------------
    def coefficients(self, normalised_chunk) -> np.ndarray:
        """Rounded scaled DCT coefficients (H, D) of one normalised chunk; row k is frequency k."""
        x = self._check_chunk(normalised_chunk)
        _check_normalised(x)
        return np.rint(self.scale * (self._dct @ x)).astype(np.int64)

    def encode_normalised(self, normalised_chunk) -> np.ndarray:
        """One normalised chunk (H, D) in [-1, 1] -> BPE ids (int64, length varies with the content)."""
        flat = self.coefficients(normalised_chunk).reshape(-1)
        text = "".join(map(chr, (flat - self.min_token + CHAR_BASE).tolist()))
        enc = self.bpe.encode(text, add_special_tokens=False)
        if "".join(enc.tokens) != text:  # only a tampered tokenizer (normaliser, dropped chars) gets here
            raise FastTokenizerError("the BPE tokenizer does not encode coefficient strings losslessly")
        return np.asarray(enc.ids, dtype=np.int64)

    def encode(self, chunk) -> np.ndarray:
        """One raw chunk (H, D) -> BPE ids (normalised with the tokenizer's statistics first, if any)."""
        x = self._check_chunk(chunk)
        return self.encode_normalised(x if self.stats is None else self.stats.normalise(x))

    def encode_batch(self, chunks) -> list[np.ndarray]:
        return [self.encode(c) for c in check_finite(chunks, "action chunks")]

    # --- decoding -----------------------------------------------------------------------------
    def decode_normalised(self, token_ids, on_error: str = "raise", relaxed: bool = False) -> np.ndarray:
        """BPE ids -> normalised chunk (H, D) in [-1, 1]; see :meth:`decode` for ``on_error``/``relaxed``."""
        _check_on_error(on_error)
        try:
            return self._decode_normalised(token_ids, relaxed)
        except FastDecodeError:
            if on_error == "raise":
                raise
            return self._hold_chunk_normalised()

    def decode(self, token_ids, on_error: str = "raise", relaxed: bool = False) -> np.ndarray:
        """BPE ids -> raw chunk (H, D).

        ``on_error="raise"`` raises :class:`FastDecodeError` on a malformed sequence, ``"zeros"`` returns the
        hold chunk (raw zeros). ``relaxed=True`` accepts a number of coefficients other than H x D (zero-fills
        missing high frequencies, drops extra ones); an empty sequence or an unknown id stays an error."""
        _check_on_error(on_error)
        try:
            x = self._decode_normalised(token_ids, relaxed)
        except FastDecodeError:
            if on_error == "raise":
                raise
            return np.zeros((self.horizon, self.action_dim))
        return x if self.stats is None else self.stats.unnormalise(x)

    def _decode_normalised(self, token_ids, relaxed: bool) -> np.ndarray:
        ids = _check_ids(token_ids)
        if ids.size == 0:
            raise FastDecodeError("empty token sequence: expected the tokens of one action chunk")
        unknown = (ids < 0) | (ids >= self.vocab_size)
        if np.any(unknown):
            raise FastDecodeError(f"token id(s) {ids[unknown][:5].tolist()} are not in the FAST vocabulary "
                                  f"[0, {self.vocab_size - 1}]")
        flat = np.concatenate([self._id_to_ints[i] for i in ids.tolist()])
        n = self.num_coefficients
        if flat.size != n:
            if not relaxed:
                raise FastDecodeError(f"token sequence decodes to {flat.size} coefficients, a chunk of horizon "
                                      f"{self.horizon} x {self.action_dim} dimensions needs {n}")
            flat = np.concatenate([flat[:n], np.zeros(max(0, n - flat.size), dtype=np.int64)])
        coeffs = flat.reshape(self.horizon, self.action_dim) / self.scale
        return np.clip(self._dct.T @ coeffs, -1.0, 1.0)

    def _hold_chunk_normalised(self) -> np.ndarray:
        """The hold chunk (raw zeros) in normalised space, clipped into [-1, 1]."""
        zeros = np.zeros((self.horizon, self.action_dim))
        return zeros if self.stats is None else self.stats.normalise(zeros)

    def _check_chunk(self, chunk) -> np.ndarray:
        x = check_finite(chunk, "action chunk")
        if x.shape != (self.horizon, self.action_dim):
            raise InvalidActionError(f"action chunk has shape {x.shape}, the tokenizer expects "
                                     f"({self.horizon}, {self.action_dim})")
        return x

    # --- persistence --------------------------------------------------------------------------
    def config(self) -> dict:
        return {"format_version": FORMAT_VERSION, "horizon": self.horizon, "action_dim": self.action_dim,
                "scale": self.scale, "min_token": self.min_token, "char_base": CHAR_BASE,
                "vocab_size": self.vocab_size,
                "observed_range": None if self.observed_range is None else list(self.observed_range),
                "stats": None if self.stats is None else self.stats.to_dict()}

    def save_pretrained(self, directory) -> Path:
        """Write ``fast_tokenizer_config.json`` and ``tokenizer.json`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in ((TOKENIZER_FILENAME, self.bpe.to_str()),
                           (CONFIG_FILENAME, json.dumps(self.config(), indent=2))):
            tmp = directory / (name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, directory / name)
        return directory

    @classmethod
    def from_pretrained(cls, directory) -> FastActionTokenizer:
        """Read a directory written by :meth:`save_pretrained` (local files only, no code is run)."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        cfg_path, tok_path = directory / CONFIG_FILENAME, directory / TOKENIZER_FILENAME
        for p in (cfg_path, tok_path):
            if not p.is_file():
                raise MissingPathError(f"FAST tokenizer file not found: {p}")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_path} is not valid JSON: {exc}") from exc
        cfg = _check_config(cfg, cfg_path)
        try:
            bpe = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ConfigError(f"{tok_path} is not a Hugging Face tokenizers file: {exc}") from exc
        if type(bpe.model).__name__ != "BPE" or bpe.normalizer is not None or bpe.pre_tokenizer is not None:
            raise ConfigError(f"{tok_path} must hold a plain BPE model (no normaliser or pre-tokeniser)")
        stats = None if cfg["stats"] is None else ActionStats.from_dict(cfg["stats"])
        try:
            tok = cls(bpe, cfg["horizon"], cfg["action_dim"], cfg["scale"], stats,
                      None if cfg["observed_range"] is None else tuple(cfg["observed_range"]))
        except FastTokenizerError as exc:
            raise ConfigError(f"{directory}: {exc}") from exc
        if tok.min_token != cfg["min_token"] or tok.vocab_size != cfg["vocab_size"]:
            raise ConfigError(f"{cfg_path}: min_token {cfg['min_token']} / vocab_size {cfg['vocab_size']} do not match "
                              f"the tokenizer ({tok.min_token} / {tok.vocab_size})")
        return tok


def _check_params(horizon, action_dim, scale):
    if int(horizon) != horizon or horizon < 1:
        raise FastTokenizerError(f"horizon must be a positive integer, got {horizon}")
    if int(action_dim) != action_dim or action_dim < 1:
        raise FastTokenizerError(f"action_dim must be a positive integer, got {action_dim}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise FastTokenizerError(f"scale must be a positive finite number, got {scale!r}")
    if 2 * coefficient_bound(int(horizon), float(scale)) + 1 > MAX_ALPHABET:
        raise FastTokenizerError(f"scale {scale} with horizon {horizon} needs more than {MAX_ALPHABET} coefficient "
                                 "values; lower the scale")


def _check_normalised(x: np.ndarray):
    if np.any(np.abs(x) > 1.0 + RANGE_TOLERANCE):
        bad = np.argwhere(np.abs(x) > 1.0 + RANGE_TOLERANCE)[0].tolist()
        raise InvalidActionError(f"normalised action chunk leaves [-1, 1] at index {bad} (value "
                                 f"{x[tuple(bad)]:.6g}); normalise with the dataset's ActionStats first")


def _check_on_error(on_error: str):
    if on_error not in ON_ERROR:
        raise FastTokenizerError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _check_ids(token_ids) -> np.ndarray:
    try:
        ids = np.asarray(token_ids)
    except (TypeError, ValueError) as exc:
        raise FastDecodeError(f"token ids are not an array of integers: {exc}") from exc
    if ids.ndim != 1:
        raise FastDecodeError(f"token ids must be one sequence (1-D), got shape {ids.shape}")
    if ids.size == 0:
        return ids.astype(np.int64)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
        return ids.astype(np.int64)
    raise FastDecodeError(f"token ids must be integers, got dtype {ids.dtype}")


def _vocab_table(bpe, min_token: int, max_token: int) -> list[np.ndarray]:
    """For every BPE id, the coefficient integers its token stands for (checks every id is usable)."""
    vocab = bpe.get_vocab(with_added_tokens=True)
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)):
        raise FastTokenizerError("the BPE vocabulary ids are not 0 .. vocab_size - 1")
    table: list[np.ndarray | None] = [None] * n
    for token, idx in vocab.items():
        ints = np.fromiter((ord(c) - CHAR_BASE + min_token for c in token), dtype=np.int64, count=len(token))
        if ints.size == 0 or ints.min() < min_token or ints.max() > max_token:
            raise FastTokenizerError(f"BPE token {token!r} (id {idx}) is not made of coefficient characters")
        table[idx] = ints
    missing = [v for v in range(min_token, max_token + 1) if chr(CHAR_BASE + v - min_token) not in vocab]
    if missing:
        raise FastTokenizerError(f"the BPE vocabulary lacks coefficient value(s) {missing[:5]}: every chunk could "
                                 "not be encoded")
    return table


def _check_config(cfg, path) -> dict:
    keys = {"format_version", "horizon", "action_dim", "scale", "min_token", "char_base", "vocab_size",
            "observed_range", "stats"}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    unknown, missing = sorted(set(cfg) - keys), sorted(keys - set(cfg))
    if unknown or missing:
        raise ConfigError(f"{path}: unknown key(s) {unknown}, missing key(s) {missing}")
    if cfg["format_version"] != FORMAT_VERSION:
        raise ConfigError(f"{path}: format_version {cfg['format_version']!r}, this code reads {FORMAT_VERSION}")
    if cfg["char_base"] != CHAR_BASE:
        raise ConfigError(f"{path}: char_base {cfg['char_base']!r}, this code uses {CHAR_BASE}")
    for key in ("horizon", "action_dim", "min_token", "vocab_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            raise ConfigError(f"{path}: {key} must be an integer, got {cfg[key]!r}")
    if not isinstance(cfg["scale"], (int, float)) or isinstance(cfg["scale"], bool):
        raise ConfigError(f"{path}: scale must be a number, got {cfg['scale']!r}")
    if cfg["stats"] is not None and not isinstance(cfg["stats"], dict):
        raise ConfigError(f"{path}: stats must be an object or null")
    rng = cfg["observed_range"]
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)):
        raise ConfigError(f"{path}: observed_range must be [min, max] integers or null, got {rng!r}")
    return cfg
