"""Aggregates of per-sample losses and ranks, in float64 NumPy.

Ranks count the positive's place among its candidates: 1 + the number of
negatives scoring at or above it (ties count against the positive).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import numpy as np

from .errors import InputError, UsageError, arg
from .results import GradedMetrics, LossStats, PerQuery, RetrievalMetrics

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
    p05, median, p95 = percentiles(loss, (5, 50, 95))
    mean, std = mean_and_std(loss)
    return LossStats(
        mean=mean,
        std=std,
        median=float(median),
        min=float(loss.min()),
        max=float(loss.max()),
        p05=float(p05),
        p95=float(p95),
    )


_HUGE = 1e150
"""Beyond this magnitude, squares (and sums of many values) could overflow float64."""


def mean_and_std(values: np.ndarray[Any, Any]) -> tuple[float, float]:
    """The mean and population std of finite float64 values; values beyond 1e150 are
    divided by the largest magnitude first, so that neither overflows.

    >>> mean, std = mean_and_std(np.array([1e300, 3e300]))
    >>> mean, round(std / 1e300, 12)
    (2e+300, 1.0)
    """
    values = np.asarray(values, dtype=np.float64)
    largest = float(np.abs(values).max(initial=0.0))
    if largest <= _HUGE:
        return float(values.mean()), float(values.std())
    scaled = values / largest
    return largest * float(scaled.mean()), largest * float(scaled.std())


def percentiles(values: np.ndarray[Any, Any], points: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, points)`` with its default linear interpolation, bit for bit
    for finite values, from one sort (numpy's own path imports numpy.ma, a measurable share
    of start-up).

    >>> data = np.array([3.0, 1.0, 4.0, 1.5, 9.0])
    >>> percentiles(data, (5, 50, 95)) == list(np.percentile(data, [5, 50, 95]))
    True
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    result = []
    count = len(ordered)
    for point in points:
        position = (count - 1) * (point / 100)  # numpy's virtual index, as it rounds
        low = math.floor(position)
        high = min(low + 1, count - 1)
        weight = position - low
        below, above = ordered[low], ordered[high]
        # numpy's _lerp: from the nearer end, so that the result stays between the two.
        step = above - below
        result.append(float(above - step * (1 - weight) if weight >= 0.5
                            else below + step * weight))
    return result


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
        median_rank=percentiles(ranks, (50,))[0],  # whole ranks: np.median's, exactly
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


def at_chance(per_sample_loss: np.ndarray[Any, Any], num_candidates: np.ndarray[Any, Any]
              ) -> np.ndarray[Any, Any]:
    """Per query, whether its loss is log|C_i| to rounding (1e-5 relative): what scoring
    every candidate alike gives.

    >>> at_chance(np.array([np.log(4), 0.5]), np.array([4, 4])).tolist()
    [True, False]
    """
    chance = np.log(np.asarray(num_candidates, dtype=np.float64))
    loss = np.asarray(per_sample_loss, dtype=np.float64)
    result: np.ndarray[Any, Any] = np.abs(loss - chance) <= 1e-5 * np.maximum(chance, 1.0)
    return result


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


class Gain(StrEnum):
    """The gain of a relevance grade in DCG."""

    LINEAR = "linear"
    """rel: trec_eval ``ndcg_cut``, ranx ``ndcg`` (Järvelin and Kekäläinen 2002)."""
    EXPONENTIAL = "exponential"
    """2^rel − 1: ranx ``ndcg_burges`` (Burges et al. 2005)."""


DEFAULT_GRADED_AT = (1, 5, 10, 100)

IntArray = np.ndarray[Any, np.dtype[np.int64]]


def graded_metrics(
    query_index: np.ndarray[Any, Any],
    position: np.ndarray[Any, Any],
    relevance: np.ndarray[Any, Any],
    num_queries: int,
    *,
    ideal_query_index: np.ndarray[Any, Any] | None = None,
    ideal_relevance: np.ndarray[Any, Any] | None = None,
    at: Iterable[int] = DEFAULT_GRADED_AT,
    gain: Gain | str = Gain.LINEAR,
) -> GradedMetrics:
    """nDCG, recall, precision, MRR, MAP and hit rate at each cut-off k, with MRR, MAP and
    R-precision over the whole ranking, per query and averaged (trec_eval/ranx definitions).

    The input is one entry per (query, relevant document) pair, flat arrays of length P:
    ``query_index`` (P,) in 0..num_queries−1, ``position`` (P,) the document's 1-based
    place in the query's ranking of the whole corpus (distinct within a query: a total
    order, ties already broken against the relevant documents) and ``relevance`` (P,) its
    grade ≥ 1. The ideal ranking comes from the qrels: ``ideal_query_index`` (J,) and
    ``ideal_relevance`` (J,) hold the grade ≥ 1 of every judged relevant document of every
    query, ranked or not (a qrels line may name a document missing from the corpus); left
    out, the ranked pairs are the ideal. R, a query's number of relevant documents, is its
    count there.

    Every query must have R ≥ 1. ranx and trec_eval average a query without a relevant
    document in as 0, which measures the qrels rather than the ranking: leave such queries
    out before the call, and report how many were left out.

    Per query, with DCG@k = Σ_{position ≤ k} gain(rel) / log2(1 + position) and IDCG@k the
    DCG@k of the query's ideal grades sorted by falling gain:

    - ``ndcg@k`` = DCG@k / IDCG@k, gain ``linear`` (rel) or ``exponential`` (2^rel − 1);
    - ``recall@k`` = hits@k / R; ``precision@k`` = hits@k / k (k even when k > R);
    - ``mrr@k`` = 1 / the first relevant position if it is ≤ k, else 0; ``mrr`` without k;
    - ``map@k`` = Σ_{relevant at position r ≤ k} precision@r / R (R, not min(k, R), as
      ranx and trec_eval ``map_cut``); ``map`` the same over the whole ranking;
    - ``r_precision`` = hits@R / R; ``hit_rate@k`` = 1 if any relevant position ≤ k.

    ``per_query`` holds these columns (float64, one value per query); the fields hold
    their means. Cut-offs ``at`` are whole numbers ≥ 1.

    >>> m = graded_metrics(np.array([0, 0, 1]), np.array([1, 3, 2]), np.array([1, 3, 2]), 2,
    ...                    ideal_query_index=np.array([0, 0, 1, 1]),
    ...                    ideal_relevance=np.array([1, 3, 2, 1]), at=(1, 3))
    >>> m.per_query["ndcg@3"].round(4).tolist(), round(m.ndcg_at[3], 4)
    ([0.6885, 0.4796], 0.5841)
    >>> m.per_query["map"].tolist(), m.per_query["r_precision"].tolist(), m.mrr_at
    ([0.8333333333333333, 0.25], [0.5, 0.5], {1: 0.5, 3: 0.75})
    """
    gain = _gain(gain)
    cutoffs = _cutoffs(at)
    query = _int_vector("query_index", query_index)
    place = _int_vector("position", position)
    grade = _int_vector("relevance", relevance)
    _same_length(("query_index", query), ("position", place), ("relevance", grade))
    if ideal_query_index is None and ideal_relevance is None:
        ideal_query, ideal_grade = query, grade
    elif ideal_query_index is None or ideal_relevance is None:
        raise UsageError(f"give both {arg('ideal_query_index')} and {arg('ideal_relevance')}, "
                         "or neither")
    else:
        ideal_query = _int_vector("ideal_query_index", ideal_query_index)
        ideal_grade = _int_vector("ideal_relevance", ideal_relevance)
        _same_length(("ideal_query_index", ideal_query), ("ideal_relevance", ideal_grade))
    if isinstance(num_queries, bool) or operator.index(num_queries) < 1:
        raise UsageError(f"{arg('num_queries')} must be at least 1, got {num_queries}")
    num_queries = operator.index(num_queries)
    _in_range("query_index", query, 0, num_queries - 1)
    _in_range("ideal_query_index", ideal_query, 0, num_queries - 1)
    _in_range("position", place, 1, None)
    _in_range("relevance", grade, 1, None)
    _in_range("ideal_relevance", ideal_grade, 1, None)

    num_relevant = np.bincount(ideal_query, minlength=num_queries)
    ranked = np.bincount(query, minlength=num_queries)
    if (num_relevant == 0).any():
        first = int(np.argmin(num_relevant))
        raise InputError(f"query {first} has no relevant document: leave queries without "
                         "one out of the graded metrics")
    if (ranked > num_relevant).any():
        first = int(np.argmax(ranked > num_relevant))
        raise InputError(f"query {first} has {ranked[first]} ranked relevant documents but "
                         f"{num_relevant[first]} in its ideal grades")

    order = np.lexsort((place, query))
    query, place, grade = query[order], place[order], grade[order]
    starts = np.cumsum(ranked) - ranked
    repeated = (query[1:] == query[:-1]) & (place[1:] == place[:-1])
    if repeated.any():
        first = int(np.argmax(repeated))
        raise InputError(f"query {query[first]} has two relevant documents at position "
                         f"{place[first]}: positions must be distinct within a query")
    # How many relevant documents sit at or above each one (1-based): precision there.
    hits_so_far = np.arange(1, len(query) + 1) - starts[query]
    precision_here = hits_so_far / place
    # Each query's largest grade: exponential gains are taken relative to it.
    top = np.zeros(num_queries, dtype=np.int64)
    np.maximum.at(top, ideal_query, ideal_grade)
    np.maximum.at(top, query, grade)
    discounted_gain = _gain_values(grade, gain, top[query]) / np.log2(1.0 + place)

    ideal_order = np.lexsort((-ideal_grade, ideal_query))
    ideal_query = ideal_query[ideal_order]
    ideal_place = np.arange(1, len(ideal_query) + 1) - (np.cumsum(num_relevant)
                                                         - num_relevant)[ideal_query]
    ideal_discounted_gain = (_gain_values(ideal_grade[ideal_order], gain, top[ideal_query])
                             / np.log2(1.0 + ideal_place))

    def per_query_sum(weights: np.ndarray[Any, Any], index: IntArray = query) -> FloatArray:
        return np.bincount(index, weights=weights, minlength=num_queries).astype(np.float64,
                                                                                 copy=False)

    relevant = num_relevant.astype(np.float64)
    first_place = np.full(num_queries, np.inf)
    first_place[ranked > 0] = place[starts[ranked > 0]]
    columns: dict[str, FloatArray] = {}
    hits_at = {k: per_query_sum((place <= k).astype(np.float64)) for k in cutoffs}
    for k in cutoffs:
        columns[f"ndcg@{k}"] = (
            per_query_sum(np.where(place <= k, discounted_gain, 0.0))
            / per_query_sum(np.where(ideal_place <= k, ideal_discounted_gain, 0.0), ideal_query))
    for k in cutoffs:
        columns[f"recall@{k}"] = hits_at[k] / relevant
    for k in cutoffs:
        columns[f"precision@{k}"] = hits_at[k] / k
    for k in cutoffs:
        columns[f"mrr@{k}"] = np.where(first_place <= k, 1.0 / first_place, 0.0)
    columns["mrr"] = 1.0 / first_place
    columns["map"] = per_query_sum(precision_here) / relevant
    for k in cutoffs:
        columns[f"map@{k}"] = per_query_sum(np.where(place <= k, precision_here, 0.0)) / relevant
    columns["r_precision"] = (per_query_sum((place <= num_relevant[query]).astype(np.float64))
                              / relevant)
    for k in cutoffs:
        columns[f"hit_rate@{k}"] = (hits_at[k] > 0).astype(np.float64)

    def mean_at(name: str) -> dict[int, float]:
        return {k: float(columns[f"{name}@{k}"].mean()) for k in cutoffs}

    return GradedMetrics(
        queries=num_queries,
        gain=str(gain),
        ndcg_at=mean_at("ndcg"),
        recall_at=mean_at("recall"),
        precision_at=mean_at("precision"),
        mrr_at=mean_at("mrr"),
        mrr=float(columns["mrr"].mean()),
        map=float(columns["map"].mean()),
        map_at=mean_at("map"),
        r_precision=float(columns["r_precision"].mean()),
        hit_rate_at=mean_at("hit_rate"),
        per_query=columns,
    )


def _gain(gain: Gain | str) -> Gain:
    try:
        return Gain(gain)
    except ValueError:
        choices = ", ".join(member.value for member in Gain)
        raise UsageError(f"{arg('gain')} must be one of {choices}, got {gain!r}") from None


def _cutoffs(at: Iterable[int]) -> tuple[int, ...]:
    cutoffs = tuple(at)
    if not cutoffs:
        raise UsageError(f"{arg('at')}: give at least one cut-off")
    for k in cutoffs:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise UsageError(f"{arg('at')}: every cut-off must be a whole number ≥ 1, got {k!r}")
    return tuple(sorted({int(k) for k in cutoffs}))


def _int_vector(name: str, values: np.ndarray[Any, Any]) -> IntArray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"{name}: expected a 1-D integer array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name}: expected a 1-D integer array, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _same_length(*named: tuple[str, IntArray]) -> None:
    lengths = {len(array) for _, array in named}
    if len(lengths) > 1:
        shown = ", ".join(f"{name} {len(array)}" for name, array in named)
        raise InputError(f"expected arrays of one length, got {shown}")


def _in_range(name: str, values: IntArray, low: int, high: int | None) -> None:
    outside = values < low if high is None else (values < low) | (values > high)
    if outside.any():
        first = int(np.argmax(outside))
        bound = f"≥ {low}" if high is None else f"between {low} and {high}"
        raise InputError(f"{name} must be {bound}, got {values[first]} at index {first}")


def _gain_values(grade: IntArray, gain: Gain, top: IntArray) -> FloatArray:
    """Each relevance grade's gain; exponential gains, 2^rel − 1, divided by 2^top (the
    query's largest grade), which leaves its nDCG as it is, exactly (a power of two), and
    keeps 2^rel from overflowing at grades of 1024 and more."""
    if gain is Gain.LINEAR:
        return grade.astype(np.float64)
    return np.exp2((grade - top).astype(np.float64)) - np.exp2(-top.astype(np.float64))
