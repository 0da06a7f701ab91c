"""The Python API: the loss as a tensor, and a scored result with every diagnostic."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from .engine import EngineOptions, PerSampleScores, Rows, score_embeddings
from .errors import UsageError
from .metrics import (
    DEFAULT_RECALL_AT,
    loss_stats,
    mi_lower_bound,
    mi_notes,
    retrieval_metrics,
)
from .results import RunInfo, ScoreResult, SweepResult, SweepRow
from .similarity import Similarity
from .temperature import SweepScores, sweep_embeddings


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
    return summarize(per_sample, options, time.perf_counter() - started, recall_at), per_sample


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


def summarize(
    per_sample: PerSampleScores,
    options: EngineOptions,
    seconds: float,
    recall_at: tuple[int, ...] = DEFAULT_RECALL_AT,
    temperature_fitted: bool = False,
) -> ScoreResult:
    """The aggregate result of a one-temperature run."""
    loss = per_sample.loss[:, 0].detach().double().cpu().numpy()
    num_candidates = per_sample.num_candidates.cpu().numpy()
    bound, ceiling = mi_lower_bound(loss, num_candidates)
    return ScoreResult(
        run=_run_info(per_sample, options, seconds),
        temperature=options.temperatures[0],
        num_candidates_min=int(num_candidates.min()),
        num_candidates_max=int(num_candidates.max()),
        loss=loss_stats(loss),
        retrieval=retrieval_metrics(per_sample.rank.cpu().numpy(), recall_at),
        mi_lower_bound_nats=bound,
        mi_ceiling_nats=ceiling,
        notes=mi_notes(bound, ceiling),
        temperature_fitted=temperature_fitted,
    )


def per_sample_columns(
    per_sample: PerSampleScores, ids: np.ndarray[Any, Any] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The per-sample table: index, id (when given), loss, scores, rank, candidates, p(positive)."""
    loss = per_sample.loss[:, 0].detach().cpu().double().numpy()
    hardest = per_sample.hardest_negative_score.detach().cpu().double().numpy()
    columns: dict[str, np.ndarray[Any, Any]] = {"index": np.arange(len(loss))}
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
    return columns


def _check_temperature(temperature: float) -> float:
    if not (temperature > 0 and np.isfinite(temperature)):
        raise UsageError(f"temperature must be a finite number > 0, got {temperature}")
    return float(temperature)


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    return batch_size
