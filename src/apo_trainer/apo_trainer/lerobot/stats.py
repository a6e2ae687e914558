"""Per-episode feature statistics and their aggregation, in the shapes LeRobot expects.

Vectors (T, D) -> (D,); scalars (T,) -> (1,); images -> per channel in [0, 1], shaped (3, 1, 1);
``count`` is always (1,). v3.0 also keeps the quantiles q01..q99 (used by quantile normalisation);
aggregated quantiles are the count-weighted mean of the episodes' quantiles, as LeRobot does.
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def _stats(x: np.ndarray, count: int, quantiles: bool) -> dict[str, np.ndarray]:
    """Statistics over axis 0 of a (N, C) array."""
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([count])}
    if quantiles:
        for name, q in QUANTILES.items():
            out[name] = np.quantile(x, q, axis=0)
    return out


def column_stats(values: np.ndarray, quantiles: bool) -> dict[str, np.ndarray]:
    x = np.asarray(values, dtype=np.float64)
    return _stats(x.reshape(len(x), -1), len(x), quantiles)


def image_stats(images: np.ndarray, quantiles: bool) -> dict[str, np.ndarray]:
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    stats = _stats(pixels, len(images), quantiles)
    return {k: v if k == "count" else v.reshape(-1, 1, 1) for k, v in stats.items()}


def episode_stats(columns: dict, images: dict[str, np.ndarray], quantiles: bool) -> dict[str, dict]:
    """Stats of every numeric column (bools as 0/1) and of the raw (T, H, W, 3) images."""
    out = {key: image_stats(value, quantiles) for key, value in images.items()}
    for key, value in columns.items():
        if isinstance(value, np.ndarray):
            out[key] = column_stats(value, quantiles)
    return out


def aggregate(stats_list: list[dict[str, dict]]) -> dict[str, dict[str, np.ndarray]]:
    """Pooled min/max/mean/std/count (+ count-weighted quantiles) over several stats sets."""
    out = {}
    for key in {k for s in stats_list for k in s}:
        parts = [s[key] for s in stats_list if key in s]
        counts = np.stack([np.asarray(p["count"], dtype=np.float64) for p in parts])
        total = counts.sum(0)
        means = np.stack([np.asarray(p["mean"]) for p in parts])
        w = counts.reshape(counts.shape[:1] + (1,) * (means.ndim - 1))
        mean = (means * w).sum(0) / total
        var = ((np.stack([np.asarray(p["std"]) ** 2 for p in parts]) + (means - mean) ** 2) * w).sum(0) / total
        agg = {"min": np.min(np.stack([p["min"] for p in parts]), 0),
               "max": np.max(np.stack([p["max"] for p in parts]), 0),
               "mean": mean, "std": np.sqrt(var), "count": total.astype(np.int64)}
        for q in QUANTILES:
            if all(q in p for p in parts):
                agg[q] = (np.stack([np.asarray(p[q]) for p in parts]) * w).sum(0) / total
        out[key] = agg
    return out


def to_json(stats: dict[str, dict]) -> dict[str, dict]:
    return {key: {k: np.asarray(v).tolist() for k, v in s.items()} for key, s in sorted(stats.items())}


def from_json(data: dict[str, dict]) -> dict[str, dict[str, np.ndarray]]:
    return {key: {k: np.asarray(v) for k, v in s.items()} for key, s in data.items()}
