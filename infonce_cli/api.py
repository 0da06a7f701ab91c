"""The Python API: the loss as a differentiable tensor, and ``score``/``sweep``/``compare``,
which build the same request as the command line and run the same pipeline."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from .engine import EngineOptions, score_embeddings
from .errors import UsageError, arg
from .requests import (
    Source,
    compare_request,
    report_request,
    retrieval_compare_request,
    retrieval_request,
    score_request,
    sweep_request,
)
from .results import (
    CompareResult,
    ModelComparison,
    ReportResult,
    RetrievalResult,
    ScoreResult,
    SweepResult,
)
from .runs import (
    run_compare,
    run_report,
    run_retrieval,
    run_retrieval_compare,
    run_score,
    run_sweep,
)
from .similarity import Similarity


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
    positive of the batch), (K, d) (shared by every query) or (N, M, d) (paired);
    with ``in_batch=True`` either is pooled with the batch's positives. Returns a scalar,
    or (N,) with ``reduction="none"``. Computed on the inputs' device, in their
    dtype (float32 or better for the reductions).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    >>> loss = info_nce(q, q.detach(), temperature=1.0)
    >>> round(loss.item(), 4)
    0.3133
    >>> loss.backward(); q.grad.shape
    torch.Size([2, 2])
    """
    _check_tensors(query, positive, negatives)
    if reduction not in ("mean", "sum", "none"):
        raise UsageError(f"reduction must be mean, sum or none, got {reduction!r}")
    options = EngineOptions(
        temperatures=(_check_temperature(temperature),),
        similarity=Similarity(similarity),
        in_batch=in_batch,
        batch_size=_check_batch_size(batch_size),
        symmetric=symmetric,
        dtype=query.dtype,
        device=query.device,
    )
    _check_nonzero(options.similarity, ("query", query), ("positive", positive),
                   ("negatives", negatives))
    per_sample = score_embeddings(query, positive, negatives, options).loss[:, 0]
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


def score(query: Source, pos: Source, neg: Source | None = None, **options: Any) -> ScoreResult:
    """Score embeddings at one temperature: every option of ``infonce score``, named as its
    flag in snake_case, and the same result the command prints (``to_dict()`` is its JSON).

    ``query``, ``pos`` and ``neg`` are arrays, tensors or paths (.npy, .npz, Parquet). The
    options are those of :class:`~infonce_cli.requests.Inputs` (``pos_ids``,
    ``query_col``, …), :class:`~infonce_cli.requests.EngineSettings` (``similarity``,
    ``batch_size``, ``device``, …), :class:`~infonce_cli.requests.Masking`
    (``mask_duplicates``, ``multi_positive``, …), :class:`~infonce_cli.requests.Report`
    (``recall_at``, ``ci``, ``worst``, …), :class:`~infonce_cli.requests.Gates` and
    ``temperature`` (a number, or ``"auto"`` to fit the loss-minimising one). The
    per-sample rows are in ``result.per_sample``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(8, 4)).astype("float32")
    >>> result = score(q, q + 0.1, temperature=0.1, device="cpu")
    >>> result.retrieval.accuracy_at_1, len(result.per_sample["loss"])
    (1.0, 8)
    """
    return run_score(score_request(query, pos, neg, **options))


def sweep(query: Source, pos: Source, neg: Source | None = None, **options: Any) -> SweepResult:
    """Losses over a temperature grid from one similarity pass, and the exact optimum: every
    option of ``infonce sweep-temperature`` (those of :func:`score`, and ``temperatures`` or
    ``min``/``max``/``steps``/``spacing``; ``per_sample=True`` adds the per-sample rows at
    the optimum).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(32, 4)).astype("float32")
    >>> result = sweep(q, q + rng.normal(size=(32, 4)).astype("float32"),
    ...                temperatures=(0.1, 1.0), device="cpu")
    >>> [row.temperature for row in result.rows], result.optimum.converged
    ([0.1, 1.0], True)
    """
    return run_sweep(sweep_request(query, pos, neg, **options))


def report(query: Source, pos: Source, neg: Source | None = None,
           **options: Any) -> ReportResult:
    """What ``infonce report`` shows: a score with every diagnostic and the worst cases
    (``worst``, 10 by default), and a sweep of the same inputs (``temperatures`` or
    ``min``/``max``/``steps``); the options of :func:`score` otherwise.
    :func:`~infonce_cli.html_report.report_html` turns it into the page."""
    return run_report(report_request(query, pos, neg, **options))


def compare(query_a: Source, pos_a: Source, query_b: Source, pos_b: Source,
            neg_a: Source | None = None, neg_b: Source | None = None,
            **options: Any) -> CompareResult:
    """Two models on the same pairs: every option of ``infonce compare`` (the input options
    apply to both models), and its result: A, B and B − A per metric with paired-bootstrap
    intervals and permutation p-values."""
    return run_compare(compare_request(query_a, pos_a, query_b, pos_b, neg_a, neg_b, **options))


def compare_retrieval(queries: list[Source], corpora: list[Source], qrels: str,
                      **options: Any) -> ModelComparison:
    """Several models retrieving for the same queries and qrels (model i: ``queries[i]``
    against ``corpora[i]``), each compared with the first on every metric: what
    ``infonce compare --qrels`` computes, with its options."""
    return run_retrieval_compare(retrieval_compare_request(queries, corpora, qrels, **options))


def retrieval(query: Source, corpus: Source, qrels: str, **options: Any) -> RetrievalResult:
    """Exact retrieval over a whole corpus: every option of ``infonce retrieval`` (ids,
    ``at``, ``gain``, ``min_relevance``, ``multi_positive``, ``temperature``, ``run=True``
    for the top-k lists in ``result.top``, …) and its result; per-query metrics are in
    ``result.per_query``."""
    return run_retrieval(retrieval_request(query, corpus, qrels, **options))


def _check_tensors(query: Any, positive: Any, negatives: Any) -> None:
    """info_nce takes tensors of the documented shapes (the other functions take files and
    arrays too)."""
    for name, value in (("query", query), ("positive", positive), ("negatives", negatives)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise UsageError(f"info_nce takes torch tensors, and {name} is a "
                             f"{type(value).__name__}: use torch.from_numpy, or "
                             "infonce_cli.score for arrays and files")
    if query.ndim != 2 or positive.shape != query.shape or 0 in query.shape:
        raise UsageError(f"query and positive must both be (N, d) with N, d ≥ 1, got "
                         f"{tuple(query.shape)} and {tuple(positive.shape)}")
    if negatives is not None and not (
            (negatives.ndim == 2 and negatives.shape[1] == query.shape[1])
            or (negatives.ndim == 3 and negatives.shape[0] == query.shape[0]
                and negatives.shape[2] == query.shape[1])):
        raise UsageError(f"negatives must be (K, d) or (N, M, d) for query {tuple(query.shape)}, "
                         f"got {tuple(negatives.shape)}")


def _check_temperature(temperature: float) -> float:
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not (temperature > 0 and math.isfinite(temperature))):
        raise UsageError(f"{arg('temperature')} must be a finite number > 0, got "
                         f"{temperature!r}")
    return float(temperature)


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise UsageError(f"{arg('batch_size')} must be a whole number ≥ 1, got {batch_size!r}")
    return batch_size


def _check_nonzero(similarity: Similarity, *sides: tuple[str, torch.Tensor | None]) -> None:
    """Cosine divides every row by its norm: refuse rows of zeros, whose loss would be NaN."""
    if similarity is not Similarity.COSINE:
        return
    for name, rows in sides:
        if rows is not None and bool((rows.detach() == 0).all(dim=-1).any()):
            raise UsageError(f"{name} holds a row of zeros, which cosine similarity cannot "
                             "score; use similarity='dot' or 'l2', or drop it")
