"""The Python API: the loss as a tensor, and a scored result with every diagnostic."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .engine import (
    CandidateIds,
    EngineOptions,
    NegativeMode,
    PerSampleScores,
    Rows,
    score_embeddings,
)
from .errors import InfonceError, UsageError
from .metrics import (
    DEFAULT_RECALL_AT,
    group_means,
    loss_stats,
    mi_lower_bound,
    mi_notes,
    per_query_metrics,
    retrieval_metrics,
)
from .results import CompareResult, Difference, RunInfo, ScoreResult, SweepResult, SweepRow
from .similarity import Similarity
from .stats import bootstrap_interval, paired_sign_flip_p_values
from .sweep import SweepScores, sweep_embeddings


def info_nce(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float = 0.05,
    similarity: Similarity | str = Similarity.COSINE,
    in_batch: bool = False,
    batch_size: int | None = None,
    symmetric: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """The InfoNCE loss of query/positive pairs, differentiable in its inputs.

    Shapes: query (N, d), positive (N, d); negatives None (in-batch: every other
    positive of the batch), (K, d) (shared by every query) or (N, M, d) (paired;
    with ``in_batch=True`` pooled with the batch's positives). Returns a scalar,
    or (N,) with ``reduction="none"``. Computed on the inputs' device, in their
    dtype (float32 or better for the reductions).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    >>> loss = info_nce(q, q.detach(), temperature=1.0)
    >>> round(loss.item(), 4)
    0.3133
    >>> loss.backward(); q.grad.shape
    torch.Size([2, 2])
    """
    options = EngineOptions(
        temperatures=(_check_temperature(temperature),),
        similarity=Similarity(similarity),
        in_batch=in_batch,
        batch_size=_check_batch_size(batch_size),
        symmetric=symmetric,
        dtype=query.dtype,
        device=query.device,
    )
    per_sample = score_embeddings(query, positive, negatives, options).loss[:, 0]
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


def score(
    query: Rows,
    positive: Rows,
    negatives: Rows | None = None,
    *,
    options: EngineOptions | None = None,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
) -> tuple[ScoreResult, PerSampleScores]:
    """Score embeddings at one temperature: the aggregate result and the per-sample scores.

    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(8, 4)).astype("float32")
    >>> result, per_sample = score(q, q + 0.1, options=EngineOptions(temperatures=(0.1,)))
    >>> result.retrieval.accuracy_at_1, per_sample.loss.shape
    (1.0, torch.Size([8, 1]))
    """
    options = options or EngineOptions()
    if len(options.temperatures) != 1:
        raise UsageError("score takes exactly one temperature")
    started = time.perf_counter()
    per_sample = score_embeddings(query, positive, negatives, options)
    result = summarize(per_sample, options, time.perf_counter() - started, Report(recall_at))
    return result, per_sample


def sweep(
    query: Rows,
    positive: Rows,
    negatives: Rows | None = None,
    *,
    temperatures: tuple[float, ...],
    options: EngineOptions | None = None,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
) -> tuple[SweepResult, SweepScores]:
    """Losses over a temperature grid from one similarity pass, and the exact optimum.

    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(32, 4)).astype("float32")
    >>> result, _ = sweep(q, q + rng.normal(size=(32, 4)).astype("float32"),
    ...                   temperatures=(0.1, 1.0))
    >>> [row.temperature for row in result.rows], result.optimum["converged"]
    ([0.1, 1.0], True)
    """
    options = options or EngineOptions()
    started = time.perf_counter()
    scores = sweep_embeddings(query, positive, negatives, temperatures, options)
    return summarize_sweep(scores, options, time.perf_counter() - started, recall_at), scores


def summarize_sweep(
    scores: SweepScores,
    options: EngineOptions,
    seconds: float,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
) -> SweepResult:
    """The aggregate result of a sweep."""
    grid = scores.grid
    num_candidates = grid.num_candidates.cpu().numpy()
    rows = []
    for index, temperature in enumerate(scores.temperatures):
        loss = grid.loss[:, index].detach().double().cpu().numpy()
        bound, _ = mi_lower_bound(loss, num_candidates)
        rows.append(SweepRow(temperature, float(loss.mean()), float(loss.std()), bound))
    return SweepResult(
        run=_run_info(grid, options, seconds),
        rows=tuple(rows),
        best_grid=min(rows, key=lambda row: row.loss_mean),
        optimum=scores.optimum.to_dict(),
        retrieval=retrieval_metrics(grid.rank.cpu().numpy(), recall_at),
        num_candidates_min=int(num_candidates.min()),
        num_candidates_max=int(num_candidates.max()),
    )


def _run_info(per_sample: PerSampleScores, options: EngineOptions, seconds: float) -> RunInfo:
    return RunInfo(
        n=int(per_sample.loss.shape[0]),
        similarity=options.similarity.value,
        negatives=per_sample.mode.value,
        device=str(options.device),
        dtype=str(options.dtype).removeprefix("torch."),
        seconds=seconds,
        batch_size=options.batch_size,
        symmetric=options.symmetric,
    )


@dataclass(frozen=True)
class Report:
    """What a score report contains beyond the aggregate metrics."""

    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT
    masking: bool = False
    """Report the masked counts; refuse queries masking left with no negative..."""
    allow_empty: bool = False
    """...or leave them out of the aggregates (with a note) instead."""
    resamples: int = 0
    """Bootstrap 95% intervals of loss_mean, accuracy_at_1 and mrr when > 0."""
    seed: int = 0
    worst: int = 0
    row_ids: np.ndarray[Any, Any] | None = None
    negative_ids: np.ndarray[Any, Any] | None = None
    groups: np.ndarray[Any, Any] | None = None
    """Query keys (N,) when several rows share a query: adds per-query metrics."""
    supcon: bool = False
    """Average each query's losses over its positives (SupCon) instead of per pair."""


def summarize(
    per_sample: PerSampleScores,
    options: EngineOptions,
    seconds: float,
    report: Report | None = None,
    temperature_fitted: bool = False,
) -> ScoreResult:
    """The aggregate result of a one-temperature run."""
    report = report or Report()
    loss = per_sample.loss[:, 0].detach().double().cpu().numpy()
    num_candidates = per_sample.num_candidates.cpu().numpy()
    rank = per_sample.rank.cpu().numpy()
    masked = per_sample.masked.cpu().numpy()
    keep = np.ones(len(loss), dtype=bool)
    notes: list[str] = []
    if report.masking:
        empty = (num_candidates == 1) & (masked > 0)
        if empty.any() and not report.allow_empty:
            raise InfonceError(
                f"masking left {int(empty.sum())} queries with no negative (first: row "
                f"{int(np.argmax(empty))}); pass --allow-empty to leave them out")
        if empty.any():
            notes.append(f"left {int(empty.sum())} queries with no negative out of the "
                         "aggregates")
        keep = ~empty
        if not keep.any():
            raise InfonceError("masking left no query with a negative")
    per_query = None
    if report.groups is not None:
        groups = np.asarray(report.groups)[keep]
        per_query = per_query_metrics(
            groups, rank[keep], per_sample.positive_score.detach().double().cpu().numpy()[keep],
            others_masked=not report.supcon, recall_at=report.recall_at)
        if report.supcon:
            per_query["loss_mean"] = float(group_means(groups, loss[keep]).mean())
    bound, ceiling = mi_lower_bound(loss[keep], num_candidates[keep])
    intervals = None
    if report.resamples:
        low, high = bootstrap_interval(
            np.stack([loss[keep], rank[keep] == 1, 1.0 / rank[keep]], axis=1),
            report.resamples, report.seed)
        intervals = {name: (float(lo), float(hi)) for name, lo, hi in
                     zip(("loss_mean", "accuracy_at_1", "mrr"), low, high, strict=True)}
    return ScoreResult(
        run=_run_info(per_sample, options, seconds),
        temperature=options.temperatures[0],
        num_candidates_min=int(num_candidates[keep].min()),
        num_candidates_max=int(num_candidates[keep].max()),
        loss=loss_stats(loss[keep]),
        retrieval=retrieval_metrics(rank[keep], report.recall_at),
        mi_lower_bound_nats=bound,
        mi_ceiling_nats=ceiling,
        notes=(*mi_notes(bound, ceiling), *notes),
        temperature_fitted=temperature_fitted,
        masked=int(masked.sum()) if report.masking else None,
        skipped=int((~keep).sum()),
        intervals=intervals,
        resamples=report.resamples,
        worst=_worst(per_sample, report) if report.worst else None,
        per_query=per_query,
        multi_positive=("supcon" if report.supcon else "ntxent") if per_query else None,
    )


def _worst(per_sample: PerSampleScores, report: Report) -> tuple[dict[str, Any], ...]:
    """The samples with the highest loss, highest first (ties by index)."""
    columns = per_sample_columns(per_sample, report.row_ids)
    order = np.lexsort((columns["index"], -columns["loss"]))[:report.worst]
    hardest_ids = hardest_negative_ids(per_sample, report.row_ids, report.negative_ids)
    rows = []
    for i in order:
        rows.append({
            "index": int(i),
            "id": _plain(report.row_ids[i]) if report.row_ids is not None else None,
            "loss": float(columns["loss"][i]),
            "positive_score": float(columns["positive_score"][i]),
            "hardest_negative_index": int(columns["hardest_negative_index"][i]),
            "hardest_negative_id": _plain(hardest_ids[i]) if hardest_ids is not None else None,
            "hardest_negative_score": float(columns["hardest_negative_score"][i]),
            "rank": int(columns["rank"][i]),
        })
    return tuple(rows)


def hardest_negative_ids(
    per_sample: PerSampleScores,
    row_ids: np.ndarray[Any, Any] | None,
    negative_ids: np.ndarray[Any, Any] | None,
) -> np.ndarray[Any, Any] | None:
    """The id of each query's hardest negative, where the inputs name their rows."""
    index = per_sample.hardest_negative_index.cpu().numpy()
    n = len(index)
    mode = per_sample.mode
    out = np.full(n, None, dtype=object)
    found = index >= 0
    if mode is NegativeMode.IN_BATCH or mode is NegativeMode.IN_BATCH_PAIRED:
        own = found & (index < n)
        if row_ids is not None:
            out[own] = row_ids[index[own]]
        if mode is NegativeMode.IN_BATCH_PAIRED and negative_ids is not None:
            pooled = found & (index >= n)
            per_row = negative_ids.shape[1]
            flat = index[pooled] - n
            out[pooled] = negative_ids[flat // per_row, flat % per_row]
    elif negative_ids is not None and mode is NegativeMode.SHARED:
        out[found] = negative_ids[index[found]]
    elif negative_ids is not None:
        rows = np.flatnonzero(found)
        out[rows] = negative_ids[rows, index[rows]]
    return None if all(value is None for value in out) else out


def compare_scores(
    a: tuple[PerSampleScores, float],
    b: tuple[PerSampleScores, float],
    options: EngineOptions,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
    resamples: int = 1000,
    seed: int = 0,
) -> CompareResult:
    """A and B scored on the same pairs: their metrics, and B − A with a paired-bootstrap 95%
    interval and a paired sign-flip permutation p-value per metric."""
    columns = [per_sample_metrics(scores, recall_at) for scores, _ in (a, b)]
    names = list(columns[0])
    values_a = np.stack([columns[0][name] for name in names], axis=1)
    values_b = np.stack([columns[1][name] for name in names], axis=1)
    differences = values_b - values_a
    low, high = bootstrap_interval(differences, resamples, seed)
    p_values = paired_sign_flip_p_values(differences, resamples, seed)
    return CompareResult(
        n=len(differences),
        a={name: float(v) for name, v in zip(names, values_a.mean(axis=0), strict=True)},
        b={name: float(v) for name, v in zip(names, values_b.mean(axis=0), strict=True)},
        difference={
            name: Difference(float(d), float(lo), float(hi), float(p))
            for name, d, lo, hi, p in zip(names, differences.mean(axis=0), low, high, p_values,
                                          strict=True)
        },
        resamples=resamples,
        seed=seed,
        run_a=_run_info(a[0], options, a[1]),
        run_b=_run_info(b[0], options, b[1]),
    )


def per_sample_metrics(
    per_sample: PerSampleScores, recall_at: tuple[int, ...] = DEFAULT_RECALL_AT
) -> dict[str, np.ndarray[Any, Any]]:
    """Per-sample values whose means are the metrics: loss, rank == 1, 1/rank, rank ≤ k."""
    rank = per_sample.rank.cpu().numpy().astype(np.float64)
    metrics = {
        "loss_mean": per_sample.loss[:, 0].detach().double().cpu().numpy(),
        "accuracy_at_1": (rank == 1).astype(np.float64),
        "mrr": 1.0 / rank,
    }
    for k in recall_at:
        metrics[f"recall_at_{k}"] = (rank <= k).astype(np.float64)
    return metrics


def candidate_ids(
    positive: np.ndarray[Any, Any] | None,
    negative: np.ndarray[Any, Any] | None,
    group: np.ndarray[Any, Any] | None = None,
    device: torch.device | None = None,
) -> CandidateIds:
    """Integer keys for masking, from ids of any type: equal ids get equal keys, across the
    positive and negative ids."""
    named = [ids for ids in (positive, negative) if ids is not None]
    keys: list[torch.Tensor | None] = [None, None]
    if named:
        flat = np.concatenate([np.asarray(ids).reshape(-1).astype(str) for ids in named])
        _, codes = np.unique(flat, return_inverse=True)
        offset = 0
        for slot, ids in enumerate((positive, negative)):
            if ids is None:
                continue
            size = int(np.asarray(ids).size)
            part = codes[offset:offset + size].reshape(np.asarray(ids).shape)
            keys[slot] = torch.from_numpy(part.astype(np.int64)).to(device or "cpu")
            offset += size
    group_keys = None
    if group is not None:
        _, codes = np.unique(np.asarray(group).astype(str), return_inverse=True)
        group_keys = torch.from_numpy(codes.astype(np.int64)).to(device or "cpu")
    return CandidateIds(positive=keys[0], negative=keys[1], group=group_keys)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def per_sample_columns(
    per_sample: PerSampleScores, ids: np.ndarray[Any, Any] | None = None, masked: bool = False,
    first_row: int = 0,
) -> dict[str, np.ndarray[Any, Any]]:
    """The per-sample table: index, id (when given), loss, scores, rank, candidates, p(positive)."""
    loss = per_sample.loss[:, 0].detach().cpu().double().numpy()
    hardest = per_sample.hardest_negative_score.detach().cpu().double().numpy()
    columns: dict[str, np.ndarray[Any, Any]] = {"index": np.arange(len(loss)) + first_row}
    if ids is not None:
        columns["id"] = ids
    columns.update(
        loss=loss,
        positive_score=per_sample.positive_score.detach().cpu().double().numpy(),
        hardest_negative_score=np.where(np.isfinite(hardest), hardest, np.nan),
        hardest_negative_index=per_sample.hardest_negative_index.cpu().numpy(),
        rank=per_sample.rank.cpu().numpy(),
        num_candidates=per_sample.num_candidates.cpu().numpy(),
        p_positive=np.exp(-loss),
    )
    if masked:
        columns["masked"] = per_sample.masked.cpu().numpy()
    return columns


def _check_temperature(temperature: float) -> float:
    if not (temperature > 0 and np.isfinite(temperature)):
        raise UsageError(f"temperature must be a finite number > 0, got {temperature}")
    return float(temperature)


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    return batch_size
