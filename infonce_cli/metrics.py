"""Aggregates of per-sample losses and ranks, in float64 NumPy.

Ranks count the positive's place among its candidates: 1 + the number of
negatives scoring at or above it (ties count against the positive).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .results import LossStats, PerQuery, RetrievalMetrics

DEFAULT_RECALL_AT = (1, 5, 10)
MI_NEAR_CEILING = 0.9
"""Fraction of log|C| above which the MI lower bound is reported as saturated."""

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def loss_stats(per_sample_loss: np.ndarray[Any, Any]) -> LossStats:
    """Mean, population std, median, extremes and 5th/95th percentiles (linear interpolation).

    >>> loss_stats(np.array([1.0, 2.0, 3.0])).std
    0.816496580927726
    """
    loss = np.asarray(per_sample_loss, dtype=np.float64)
    p05, median, p95 = np.percentile(loss, [5, 50, 95])
    return LossStats(
        mean=float(loss.mean()),
        std=float(loss.std()),
        median=float(median),
        min=float(loss.min()),
        max=float(loss.max()),
        p05=float(p05),
        p95=float(p95),
    )


def retrieval_metrics(
    rank: np.ndarray[Any, Any], recall_at: tuple[int, ...] = DEFAULT_RECALL_AT
) -> RetrievalMetrics:
    """Accuracy@1, recall@k, MRR, nDCG@10 (one relevant document) and mean/median rank.

    >>> m = retrieval_metrics(np.array([1, 2, 4]), recall_at=(1, 2))
    >>> m.recall_at, round(m.mrr, 4)
    ({1: 0.3333333333333333, 2: 0.6666666666666666}, 0.5833)
    """
    ranks = np.asarray(rank, dtype=np.float64)
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(1.0 + ranks), 0.0)
    return RetrievalMetrics(
        accuracy_at_1=float((ranks == 1).mean()),
        recall_at={k: float((ranks <= k).mean()) for k in recall_at},
        mrr=float((1.0 / ranks).mean()),
        ndcg_at_10=float(ndcg.mean()),
        mean_rank=float(ranks.mean()),
        median_rank=float(np.median(ranks)),
    )


def mi_lower_bound(
    per_sample_loss: np.ndarray[Any, Any], num_candidates: np.ndarray[Any, Any]
) -> tuple[float, float]:
    """The InfoNCE bound on mutual information, mean(log|C_i| − loss_i), and its ceiling
    mean(log|C_i|), both in nats.

    >>> mi_lower_bound(np.array([0.0, np.log(4)]), np.array([4, 4]))
    (0.6931471805599453, 1.3862943611198906)
    """
    log_candidates = np.log(np.asarray(num_candidates, dtype=np.float64))
    loss = np.asarray(per_sample_loss, dtype=np.float64)
    return float((log_candidates - loss).mean()), float(log_candidates.mean())


def mi_notes(bound: float, ceiling: float) -> tuple[str, ...]:
    """A warning when the MI bound is close to log|C|, which it can never exceed."""
    if ceiling > 0 and bound >= MI_NEAR_CEILING * ceiling:
        return (
            f"the MI lower bound ({bound:.3f} nats) is near its ceiling log|C| = {ceiling:.3f} "
            "nats: it is saturated, and more negatives would be needed to measure more",
        )
    return ()


def per_query_metrics(
    groups: np.ndarray[Any, Any],
    rank: np.ndarray[Any, Any],
    positive_score: np.ndarray[Any, Any],
    others_masked: bool,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
    loss: np.ndarray[Any, Any] | None = None,
) -> PerQuery:
    """Retrieval metrics per query when several rows (positives) share a query.

    ``groups`` (N,) are integer query keys. A query's best positive is its lowest rank
    (accuracy@1, MRR); recall@k is the fraction of its positives among its top k
    candidates. When the other positives were masked from each row's candidates
    (``others_masked``), a positive's place among all candidates is its rank plus the
    number of the query's other positives scoring at or above it. With per-row ``loss``,
    ``loss_mean`` is the mean over queries of each query's mean loss (SupCon).

    >>> m = per_query_metrics(np.array([0, 0, 1]), np.array([1, 1, 2]),
    ...                       np.array([0.9, 0.5, 0.7]), others_masked=True, recall_at=(1, 2))
    >>> m.queries, m.accuracy_at_1, m.recall_at
    (2, 0.5, {1: 0.25, 2: 1.0})
    """
    order = np.lexsort((-positive_score, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    place = rank[order].astype(np.int64)
    if others_masked:
        # Within a group sorted by falling score, count the other positives scoring at or
        # above each one (ties count against it, as everywhere).
        scores = positive_score[order]
        for start, size in zip(starts, sizes, strict=True):
            block = scores[start:start + size]
            at_or_above = np.searchsorted(-block, -block, side="right") - 1
            place[start:start + size] += at_or_above
    best = np.minimum.reduceat(place, starts)
    return PerQuery(
        queries=int(len(starts)),
        accuracy_at_1=float((best == 1).mean()),
        mrr=float((1.0 / best).mean()),
        recall_at={k: float((np.add.reduceat((place <= k).astype(np.float64), starts)
                             / sizes).mean()) for k in recall_at},
        loss_mean=None if loss is None else float(group_means(groups, loss).mean()),
    )


def group_means(groups: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> FloatArray:
    """Mean of ``values`` per group key, in key order.

    >>> group_means(np.array([1, 0, 1]), np.array([1.0, 5.0, 3.0])).tolist()
    [5.0, 2.0]
    """
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=values) / counts
