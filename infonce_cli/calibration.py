"""The calibration of the contrastive softmax: how far its top-1 probability is from the
top-1 accuracy. NumPy only.

For query i at temperature τ (s = 1/τ), the softmax over its candidates gives its
largest probability exp(s·x_max − logsumexp_j s·x_j) = exp(s·(x_max − x_pos) − loss_i),
x_max the larger of the positive's and the hardest negative's scores; the prediction is
right when the positive scores above every negative (rank 1; a tie counts against it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError, arg
from .results import Calibration, CalibrationBin

Array = np.ndarray[Any, Any]

CALIBRATION_BINS = 15


CONFIDENCE_ROUNDING = 1e-3
"""The most that rounding may move a top probability's log before calibration is refused."""


def top_probability(loss: Array, positive_score: Array, hardest_score: Array,
                    scale: Array | float, dtype: str) -> Array:
    """Each query's largest softmax probability, from its loss at ``scale`` = 1/τ (loss and
    scale broadcast: (N,) with a number, or (N, T) with (T,)); a NaN or −inf hardest
    score means no negative. ``dtype`` is the run's: losses and scores of a float64 run
    are float64, the others' float32.

    The log of the probability, s·(x_max − x_pos) − loss, is a difference of numbers as
    large as the logits: refused when their rounding could move it by more than
    ``CONFIDENCE_ROUNDING`` (a very small τ), else kept at most 0 (a probability ≤ 1)."""
    positive = np.asarray(positive_score, dtype=np.float64)
    top = np.fmax(positive, np.nan_to_num(np.asarray(hardest_score, dtype=np.float64),
                                          nan=-np.inf))
    loss = np.asarray(loss, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    gap, size = top - positive, np.abs(top) + np.abs(positive)
    if np.ndim(loss) == 2:
        gap, size = gap[:, None], size[:, None]
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    rounding = 2 * eps * (np.abs(loss) + scale * np.where(np.isfinite(size), size, 0.0))
    if (rounding > CONFIDENCE_ROUNDING).any():
        worst = np.broadcast_to(scale, rounding.shape)[rounding > CONFIDENCE_ROUNDING].max()
        raise InputError(
            f"calibration at temperature {1 / worst:g}: the softmax is too sharp for {dtype} "
            "to give its largest probability; use a larger temperature or "
            f"{arg('dtype')} float64")
    confidence: Array = np.exp(np.minimum(gap * scale - loss, 0.0))
    return confidence


def calibration(confidence: Array, correct: Array, bins: int = CALIBRATION_BINS
                ) -> Calibration:
    """Expected and maximum calibration error over ``bins`` equal-width bins of [0, 1]:
    bin b holds confidences in [b/B, (b+1)/B), the last one 1 as well; ECE = Σ_b n_b/N ·
    |accuracy_b − confidence_b|, MCE = the largest gap of a non-empty bin.

    >>> result = calibration(np.array([0.95, 0.95, 0.25]), np.array([1, 1, 0]), bins=10)
    >>> round(result.ece, 6), round(result.mce, 6)
    (0.116667, 0.25)
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if not len(confidence):
        raise ValueError("calibration needs at least one query")
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(count > 0, np.bincount(index, confidence, bins) / count, 0.0)
        accuracy = np.where(count > 0, np.bincount(index, correct, bins) / count, 0.0)
    gaps = np.abs(accuracy - mean_confidence)
    table = tuple(CalibrationBin(low=b / bins, high=(b + 1) / bins, count=int(count[b]),
                                 confidence=float(mean_confidence[b]) if count[b] else None,
                                 accuracy=float(accuracy[b]) if count[b] else None)
                  for b in range(bins))
    return Calibration(ece=float((gaps * count).sum() / len(confidence)),
                       mce=float(gaps[count > 0].max()), bins=table)

