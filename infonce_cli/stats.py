"""Resampling statistics on per-sample values: bootstrap intervals and paired tests. NumPy only.

Every function takes per-sample values (one row per pair) and a seed, so results are
reproducible; the means of many resamples are computed as count-weighted sums in
bounded chunks, never as one resamples × samples matrix larger than needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
_CHUNK_CELLS = 2**23
"""Resample × sample counts drawn at a time."""


def _resample_means(values: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """Means of ``values`` (N, K) over ``resamples`` bootstrap resamples: (resamples, K)."""
    n = values.shape[0]
    out = np.empty((resamples, values.shape[1]))
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, per_chunk):
        stop = min(start + per_chunk, resamples)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                           for _ in range(stop - start)])
        out[start:stop] = counts @ values / n
    return out


def bootstrap_interval(
    values: np.ndarray[Any, Any], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Percentile bootstrap interval of the mean of each column of ``values`` (N, K).

    >>> low, high = bootstrap_interval(np.arange(100.0)[:, None], resamples=500, seed=1)
    >>> bool(low[0] < 49.5 < high[0])
    True
    """
    matrix = _columns(values)
    means = _resample_means(matrix, resamples, np.random.default_rng(seed))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


def paired_sign_flip_p_values(
    differences: np.ndarray[Any, Any], permutations: int = 1000, seed: int = 0
) -> FloatArray:
    """Two-sided p-values that the mean of each column of paired differences (N, K) is 0:
    under the null each difference is as likely to have either sign.

    >>> p = paired_sign_flip_p_values(np.full((50, 1), 0.3), permutations=200, seed=0)
    >>> float(p[0]) < 0.01
    True
    """
    matrix = _columns(differences)
    n = matrix.shape[0]
    observed = np.abs(matrix.mean(axis=0))
    rng = np.random.default_rng(seed)
    at_least = np.zeros(matrix.shape[1])
    for signs in _sign_chunks(n, permutations, rng):
        flipped = np.abs(signs @ matrix / n)
        at_least += (flipped >= observed - 1e-12 * np.maximum(observed, 1)).sum(axis=0)
    return (1 + at_least) / (1 + permutations)


def _sign_chunks(n: int, total: int, rng: np.random.Generator) -> Iterator[FloatArray]:
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, total, per_chunk):
        count = min(per_chunk, total - start)
        yield rng.choice(np.array([-1.0, 1.0]), size=(count, n))


def _columns(values: np.ndarray[Any, Any]) -> FloatArray:
    matrix = np.asarray(values, dtype=np.float64)
    return matrix[:, None] if matrix.ndim == 1 else matrix


CORRECTIONS = ("holm", "bonferroni")


def adjusted_p_values(p_values: np.ndarray[Any, Any], method: str = "holm") -> FloatArray:
    """p-values adjusted for testing them together: Holm's step-down (controls the
    family-wise error rate, and is never less powerful than Bonferroni) or Bonferroni.

    >>> adjusted_p_values(np.array([0.01, 0.04, 0.03])).tolist()
    [0.03, 0.06, 0.06]
    >>> adjusted_p_values(np.array([0.01, 0.04, 0.03]), "bonferroni").tolist()
    [0.03, 0.12, 0.09]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out
