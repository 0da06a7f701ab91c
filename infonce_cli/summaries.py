"""From per-sample scores to result objects: aggregates, worst cases, per-query metrics,
intervals and comparisons. Tensors come in, frozen dataclasses go out; NumPy in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .calibration import calibration, top_probability
from .engine import NegativeMode, PerSampleScores
from .errors import InfonceError, InputError, Note, arg
from .metrics import (
    at_chance,
    graded_metrics,
    group_means,
    loss_stats,
    mean_and_std,
    mi_lower_bound,
    mi_notes,
    per_query_metrics,
    retrieval_metrics,
)
from .ranking import MatchedQrels, RelevantScores
from .requests import Evaluation
from .results import (
    CompareResult,
    Difference,
    ModelComparison,
    Optimum,
    PerSampleColumns,
    RetrievalResult,
    RunInfo,
    ScoreResult,
    SweepResult,
    SweepRow,
    WorstCase,
)
from .stats import adjusted_p_values, bootstrap_interval, paired_sign_flip_p_values

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Labels:
    """What names the rows and shapes the report: ids, query groups and report options."""

    recall_at: tuple[int, ...]
    masking: bool = False
    """Report masked counts, and refuse (or with allow_empty leave out) queries that
    masking left with no negative."""
    allow_empty: bool = False
    row_ids: Array | None = None
    negative_ids: Array | None = None
    groups: Array | None = None
    supcon: bool = False
    resamples: int = 0
    seed: int = 0
    worst: int = 0


def kept_queries(per_sample: PerSampleScores, labels: Labels) -> tuple[Array, tuple[str, ...]]:
    """The queries that count in the aggregates, and a note when some were left out.

    A query that masking left with no negative is an error, unless ``allow_empty``.
    """
    num_candidates = per_sample.num_candidates.cpu().numpy()
    keep = np.ones(len(num_candidates), dtype=bool)
    if not labels.masking:
        return keep, ()
    empty = (num_candidates == 1) & (per_sample.masked.cpu().numpy() > 0)
    if not empty.any():
        return keep, ()
    if not labels.allow_empty:
        raise InfonceError(
            f"masking left {int(empty.sum())} queries with no negative (first: row "
            f"{int(np.argmax(empty))}); pass {arg('allow_empty')} to leave them out")
    if empty.all():
        raise InfonceError("masking left no query with a negative")
    return ~empty, (f"left {int(empty.sum())} queries with no negative out of the aggregates",)


def check_finite(loss: Array, temperature: float, dtype: str) -> None:
    """Refuse a non-finite loss: exit 0 must never carry a NaN or a null."""
    bad = ~np.isfinite(loss)
    if bad.any():
        # float16 scores themselves overflow (beyond 65504), which no temperature mends.
        cause, fixes = ((f"the scores or the logits overflow {dtype}",
                         f"{arg('dtype')} float32, a larger temperature")
                        if dtype == "float16" else
                        (f"the logits overflow {dtype}",
                         f"a larger temperature, {arg('dtype')} float64"))
        raise InputError(
            f"the loss is not finite at temperature {temperature:g} for {int(bad.sum())} "
            f"pairs (first: row {int(np.argmax(bad))}): {cause}; use {fixes}, or rescale "
            "the vectors")


def summarize_score(
    per_sample: PerSampleScores, run: RunInfo, temperature: float, labels: Labels,
    temperature_fitted: bool = False, local: PerSampleScores | None = None,
    first_row: int = 0,
) -> ScoreResult:
    """The aggregate result of a one-temperature run; ``local`` (this rank's rows, from
    ``first_row``) are kept as per-sample columns."""
    loss = per_sample.loss[:, 0].detach().double().cpu().numpy()
    check_finite(loss, temperature, run.dtype)
    num_candidates = per_sample.num_candidates.cpu().numpy()
    rank = per_sample.rank.cpu().numpy()
    keep, notes = kept_queries(per_sample, labels)
    per_query = None
    if labels.groups is not None:
        per_query = per_query_metrics(
            np.asarray(labels.groups)[keep], rank[keep],
            per_sample.positive_score.detach().double().cpu().numpy()[keep],
            others_masked=not labels.supcon, recall_at=labels.recall_at,
            loss=loss[keep] if labels.supcon else None)
    bound, ceiling = mi_lower_bound(loss[keep], num_candidates[keep])
    notes = (*notes, *_scale_notes(bound, ceiling, temperature, run, temperature_fitted,
                                   _at_chance(per_sample, loss, num_candidates, keep)),
             *_tie_notes(per_sample, labels, keep))
    intervals = None
    if labels.resamples:
        low, high = bootstrap_interval(
            np.stack([loss[keep], rank[keep] == 1, 1.0 / rank[keep]], axis=1),
            labels.resamples, labels.seed)
        intervals = {name: (float(lo), float(hi)) for name, lo, hi in
                     zip(("loss_mean", "accuracy_at_1", "mrr"), low, high, strict=True)}
    own = local if local is not None else per_sample
    row_ids = labels.row_ids
    columns = per_sample_columns(
        own, None if row_ids is None else row_ids[first_row:first_row + len(own.rank)],
        masked=labels.masking, first_row=first_row)
    return ScoreResult(
        run=run,
        temperature=temperature,
        num_candidates_min=int(num_candidates[keep].min()),
        num_candidates_max=int(num_candidates[keep].max()),
        loss=loss_stats(loss[keep]),
        retrieval=retrieval_metrics(rank[keep], labels.recall_at),
        mi_lower_bound_nats=bound,
        mi_ceiling_nats=ceiling,
        notes=(*mi_notes(bound, ceiling), *notes),
        temperature_fitted=temperature_fitted,
        masked=int(per_sample.masked.sum()) if labels.masking else None,
        skipped=int((~keep).sum()),
        intervals=intervals,
        resamples=labels.resamples,
        worst=worst_cases(per_sample, labels) if labels.worst else None,
        per_query=per_query,
        multi_positive=("supcon" if labels.supcon else "ntxent") if per_query else None,
        per_sample=columns,
    )


def summarize_sweep(
    grid: PerSampleScores, temperatures: tuple[float, ...], optimum: Optimum, run: RunInfo,
    labels: Labels,
) -> SweepResult:
    """The aggregate result of a sweep."""
    keep, notes = kept_queries(grid, labels)
    num_candidates = grid.num_candidates.cpu().numpy()
    positive = grid.positive_score.detach().double().cpu().numpy()[keep]
    hardest = grid.hardest_negative_score.detach().double().cpu().numpy()[keep]
    correct = grid.rank.cpu().numpy()[keep] == 1
    rows = []
    for index, temperature in enumerate(temperatures):
        loss = grid.loss[:, index].detach().double().cpu().numpy()
        check_finite(loss, temperature, run.dtype)
        bound, _ = mi_lower_bound(loss[keep], num_candidates[keep])
        # A symmetric loss averages two softmaxes: there is no one softmax to calibrate.
        ece = None if run.symmetric else calibration(
            top_probability(loss[keep], positive, hardest, 1.0 / temperature, run.dtype),
            correct).ece
        rows.append(SweepRow(temperature, *mean_and_std(loss[keep]), bound, ece))
    if optimum.temperature is not None and not keep.all():
        # Queries left with no negative have a loss and slope of exactly 0 at every τ:
        # the fit's means over all queries scale to the kept ones exactly.
        scale = len(keep) / int(keep.sum())
        optimum = Optimum(optimum.temperature, (optimum.loss_mean or 0.0) * scale,
                          optimum.converged, gradient=None if optimum.gradient is None
                          else optimum.gradient * scale, passes=optimum.passes)
    per_query = None
    if labels.groups is not None:
        per_query = "supcon" if labels.supcon else "ntxent"
    return SweepResult(
        run=run,
        rows=tuple(rows),
        best_grid=min(rows, key=lambda row: row.loss_mean),
        optimum=optimum,
        retrieval=retrieval_metrics(grid.rank.cpu().numpy()[keep], labels.recall_at),
        num_candidates_min=int(num_candidates[keep].min()),
        num_candidates_max=int(num_candidates[keep].max()),
        masked=int(grid.masked.sum()) if labels.masking else None,
        skipped=int((~keep).sum()),
        multi_positive=per_query,
        notes=notes,
    )


def with_per_sample(result: SweepResult, temperature: float, scores: PerSampleScores,
                    first_row: int, labels: Labels) -> SweepResult:
    """The sweep's result with the per-sample rows at ``temperature`` (the optimum, or the
    best grid point when there is none); ``scores`` are this rank's, from ``first_row``."""
    check_finite(scores.loss[:, 0].detach().double().cpu().numpy(), temperature,
                 result.run.dtype)
    row_ids = labels.row_ids
    columns = per_sample_columns(
        scores, None if row_ids is None else row_ids[first_row:first_row + len(scores.rank)],
        masked=labels.masking, first_row=first_row)
    notes = result.notes
    if result.optimum.temperature is None:
        notes = (*notes, f"no finite optimum: the per-sample rows are at the best grid "
                         f"temperature {temperature:g}")
    return replace(result, per_sample=columns, per_sample_temperature=temperature, notes=notes)


def _tie_notes(per_sample: PerSampleScores, labels: Labels, keep: Array) -> tuple[str, ...]:
    """Say how many queries have a candidate scoring exactly as their positive: almost always
    a bit-identical copy of it, which counts against the rank unless masked."""
    if labels.masking:
        return ()
    hardest = per_sample.hardest_negative_score.detach().cpu().double().numpy()
    positive = per_sample.positive_score.detach().cpu().double().numpy()
    tied = int(((hardest == positive) & keep).sum())
    if not tied:
        return ()
    return (Note(f"{_count(tied, 'query has its', 'queries have their')} hardest negative "
                 "scoring exactly as the positive (a bit-identical copy, most likely), which "
                 f"counts against the rank; {arg('mask_duplicates')} drops such copies"),)


def _at_chance(per_sample: PerSampleScores, loss: Array, num_candidates: Array, keep: Array
               ) -> str | None:
    """Whether every kept query's loss is log|C_i| to rounding, as if its candidates scored
    alike: "tied" when each one's hardest negative does score as its positive (no
    temperature tells them apart), "uniform" when only the softmax is (τ too large)."""
    if not at_chance(loss[keep], num_candidates[keep]).all():
        return None
    hardest = per_sample.hardest_negative_score.detach().cpu().double().numpy()[keep]
    positive = per_sample.positive_score.detach().cpu().double().numpy()[keep]
    return "tied" if np.array_equal(hardest, positive) else "uniform"


def _scale_notes(bound: float, ceiling: float, temperature: float, run: RunInfo,
                 fitted: bool, chance: str | None) -> tuple[str, ...]:
    """A hint when the loss is no better than scoring every candidate alike: τ is then
    usually wrong for the scale of the scores (raw dot products, say, or a τ so large that
    the softmax is uniform), unless the candidates do score alike."""
    if chance == "tied":
        return (Note("every candidate of each query scores as its positive, so each loss "
                     f"is log|C| = {ceiling:.3g} nats at any temperature: these rows cannot "
                     "tell the pairs apart (the MI lower bound is 0)"),)
    if chance == "uniform" and not fitted:
        return (Note(f"every query's loss is log|C| = {ceiling:.3g} nats to rounding: at "
                     f"τ = {temperature:g} the softmax over the {run.similarity} scores is "
                     f"uniform, so τ is far too large for them; try {arg('temperature')} "
                     "auto or a sweep"),)
    if bound >= 0 or fitted:
        return ()
    return (Note(f"the mean loss is above log|C| = {ceiling:.3g} nats (the MI lower bound is "
                 f"{bound:.3g}): τ = {temperature:g} may not suit the scale of the "
                 f"{run.similarity} scores; try {arg('temperature')} auto or a sweep"),)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def worst_cases(per_sample: PerSampleScores, labels: Labels) -> tuple[WorstCase, ...]:
    """The samples with the highest loss, highest first (ties by index)."""
    loss = per_sample.loss[:, 0].detach().double().cpu().numpy()
    order = np.lexsort((np.arange(len(loss)), -loss))[:labels.worst]
    hardest_ids = hardest_negative_ids(per_sample, labels.row_ids, labels.negative_ids)
    positive = per_sample.positive_score.detach().double().cpu().numpy()
    hardest_score = per_sample.hardest_negative_score.detach().double().cpu().numpy()
    hardest_index = per_sample.hardest_negative_index.cpu().numpy()
    rank = per_sample.rank.cpu().numpy()
    return tuple(
        WorstCase(
            index=int(i),
            id=_plain(labels.row_ids[i]) if labels.row_ids is not None else None,
            loss=float(loss[i]),
            positive_score=float(positive[i]),
            hardest_negative_index=int(hardest_index[i]),
            hardest_negative_id=_plain(hardest_ids[i]) if hardest_ids is not None else None,
            hardest_negative_score=float(hardest_score[i]) if math.isfinite(hardest_score[i])
            else math.nan,
            rank=int(rank[i]),
        )
        for i in order
    )


def hardest_negative_ids(
    per_sample: PerSampleScores, row_ids: Array | None, negative_ids: Array | None,
) -> Array | None:
    """The id of each query's hardest negative, where the inputs name their rows: a row id
    for an in-batch positive (index below N), else a negative id (``hardest_negative_index``
    in the mode's numbering, see ``PerSampleScores``)."""
    index = per_sample.hardest_negative_index.cpu().numpy()
    n = len(index)
    mode = per_sample.mode
    out = np.full(n, None, dtype=object)
    found = index >= 0
    if mode in (NegativeMode.IN_BATCH, NegativeMode.IN_BATCH_PAIRED,
                NegativeMode.IN_BATCH_SHARED):
        own = found & (index < n)
        if row_ids is not None:
            out[own] = row_ids[index[own]]
        pooled = found & (index >= n)
        if mode is NegativeMode.IN_BATCH_PAIRED and negative_ids is not None:
            per_row = negative_ids.shape[1]
            flat = index[pooled] - n
            out[pooled] = negative_ids[flat // per_row, flat % per_row]
        if mode is NegativeMode.IN_BATCH_SHARED and negative_ids is not None:
            out[pooled] = negative_ids[index[pooled] - n]
    elif negative_ids is not None and mode is NegativeMode.SHARED:
        out[found] = negative_ids[index[found]]
    elif negative_ids is not None:
        rows = np.flatnonzero(found)
        out[rows] = negative_ids[rows, index[rows]]
    return None if all(value is None for value in out) else out


def per_sample_columns(
    per_sample: PerSampleScores, ids: Array | None = None, masked: bool = False,
    first_row: int = 0,
) -> PerSampleColumns:
    """The per-sample table: index, id (when given), loss, scores, rank, candidates,
    p(positive), and the masked count when masking."""
    loss = per_sample.loss[:, 0].detach().cpu().double().numpy()
    hardest = per_sample.hardest_negative_score.detach().cpu().double().numpy()
    columns: dict[str, Array] = {"index": np.arange(len(loss)) + first_row}
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


def per_sample_metrics(per_sample: PerSampleScores, recall_at: tuple[int, ...]) -> dict[str, Array]:
    """Per-sample values whose means are the metrics: loss, rank == 1, 1/rank, nDCG@10 and
    rank ≤ k."""
    rank = per_sample.rank.cpu().numpy().astype(np.float64)
    metrics = {
        "loss_mean": per_sample.loss[:, 0].detach().double().cpu().numpy(),
        "accuracy_at_1": (rank == 1).astype(np.float64),
        "mrr": 1.0 / rank,
        "ndcg_at_10": np.where(rank <= 10, 1.0 / np.log2(1.0 + rank), 0.0),
    }
    for k in recall_at:
        metrics[f"recall_at_{k}"] = (rank <= k).astype(np.float64)
    return metrics


def compare_scores(
    a: tuple[PerSampleScores, RunInfo, float],
    b: tuple[PerSampleScores, RunInfo, float],
    labels: Labels,
    temperature_fitted: bool = False,
) -> CompareResult:
    """A and B scored on the same pairs: their metrics, and B − A with a paired-bootstrap 95%
    interval and a paired sign-flip permutation p-value per metric. Queries that masking
    left with no negative in either model are left out of both (``allow_empty``)."""
    keeps = [kept_queries(scores, labels) for scores, _, _ in (a, b)]
    keep = keeps[0][0] & keeps[1][0]
    for scores, run, temperature in (a, b):
        check_finite(scores.loss[:, 0].detach().double().cpu().numpy(), temperature, run.dtype)
    columns = [per_sample_metrics(scores, labels.recall_at) for scores, _, _ in (a, b)]
    names = list(columns[0])
    values_a = np.stack([columns[0][name][keep] for name in names], axis=1)
    values_b = np.stack([columns[1][name][keep] for name in names], axis=1)
    differences = values_b - values_a
    low, high = bootstrap_interval(differences, labels.resamples, labels.seed)
    p_values = paired_sign_flip_p_values(differences, labels.resamples, labels.seed)
    notes = tuple(dict.fromkeys(note for _, model_notes in keeps for note in model_notes))
    return CompareResult(
        n=len(differences),
        a={name: float(v) for name, v in zip(names, values_a.mean(axis=0), strict=True)},
        b={name: float(v) for name, v in zip(names, values_b.mean(axis=0), strict=True)},
        difference={
            name: Difference(float(d), float(lo), float(hi), float(p))
            for name, d, lo, hi, p in zip(names, differences.mean(axis=0), low, high, p_values,
                                          strict=True)
        },
        resamples=labels.resamples,
        seed=labels.seed,
        run_a=a[1],
        run_b=b[1],
        temperature_a=a[2],
        temperature_b=b[2],
        temperature_fitted=temperature_fitted,
        notes=notes,
    )


def summarize_retrieval(
    qrels: MatchedQrels, relevant: RelevantScores, top: tuple[Array, Array] | None,
    ids: tuple[Array, Array], evaluation: Evaluation, run: RunInfo, temperature: float,
    temperature_fitted: bool = False, supcon: bool = False,
) -> RetrievalResult:
    """The result of a retrieval run: graded metrics from the positions, loss statistics
    over the positive pairs (SupCon: over each query's mean), the top-k lists by id."""
    query_ids, corpus_ids = ids
    judged = qrels.judged
    dropped = (f"; {_count(qrels.unknown, 'judgement names', 'judgements name')} an id "
               f"missing from the inputs, left out by {arg('ignore_unknown')}"
               if qrels.unknown else "")
    if not len(qrels.evaluated):
        raise InfonceError(f"the qrels name no relevant document (relevance ≥ 1) of these "
                           f"queries{dropped}")
    at = evaluation.at
    assert isinstance(at, tuple)
    ideal_rows, ideal_relevance = qrels.ideal
    metrics = graded_metrics(np.searchsorted(qrels.evaluated, judged.query_row),
                             relevant.position, judged.relevance, len(qrels.evaluated),
                             ideal_query_index=np.searchsorted(qrels.evaluated, ideal_rows),
                             ideal_relevance=ideal_relevance, at=at, gain=evaluation.gain)
    positive = relevant.positive
    if not len(judged.query_row):
        raise InfonceError("no relevant document of the qrels is in the corpus, so there is "
                           f"no positive for the loss{dropped}")
    if not positive.any():
        raise InfonceError(f"no judgement reaches {arg('min_relevance')} "
                           f"{evaluation.min_relevance}: there is no positive for the loss")
    loss = relevant.loss[positive]
    check_finite(loss, temperature, run.dtype)
    candidates = relevant.num_candidates[positive]
    if supcon:
        per_query = group_means(judged.query_row[positive], loss)
        bound, ceiling = mi_lower_bound(per_query, group_means(judged.query_row[positive],
                                                               candidates))
        stats = loss_stats(per_query)
    else:
        bound, ceiling = mi_lower_bound(loss, candidates)
        stats = loss_stats(loss)
    notes: list[str] = list(mi_notes(bound, ceiling))
    if qrels.without_relevant:
        notes.append(f"{_count(qrels.without_relevant, 'judged query has', 'judged queries have')}"
                     " no relevant document and are left out of the metrics (ranx and "
                     "trec_eval would average them in as 0)")
    if qrels.unknown:
        notes.append(f"{_count(qrels.unknown, 'judgement names', 'judgements name')} an id "
                     "that is not in the inputs: judgements of unknown queries are left out, "
                     "relevant documents missing from the corpus count as never retrieved")
    top_columns = None
    if top is not None:
        scores, rows = top
        top_columns = {"query_id": query_ids, "doc_ids": corpus_ids[rows], "scores": scores}
    return RetrievalResult(
        run=run, temperature=temperature, metrics=metrics, loss=stats,
        mi_lower_bound_nats=bound, mi_ceiling_nats=ceiling, corpus=len(corpus_ids),
        judgements=qrels.judgements, relevant=len(judged.query_row),
        without_relevant=qrels.without_relevant, unknown=qrels.unknown,
        min_relevance=evaluation.min_relevance,
        multi_positive="supcon" if supcon else "ntxent",
        temperature_fitted=temperature_fitted, notes=tuple(notes),
        per_query={"query_id": query_ids[qrels.evaluated], **metrics.per_query},
        top=top_columns)


def compare_models(
    runs: tuple[RetrievalResult, ...], names: tuple[str, ...], metrics: tuple[str, ...],
    correction: str, resamples: int, seed: int,
) -> ModelComparison:
    """Each model against the first on every metric, paired by query: the difference of
    the means, its paired-bootstrap 95% interval and sign-flip permutation p-value, and
    the p-values adjusted over the models per metric."""
    columns = [_by_query(run, names[index]) for index, run in enumerate(runs)]
    values = {name: {metric: float(np.mean(column[_per_query_name(metric)]))
                     for metric in metrics}
              for name, column in zip(names, columns, strict=True)}
    baseline = np.stack([columns[0][_per_query_name(m)] for m in metrics], axis=1)
    difference: dict[str, dict[str, Difference]] = {}
    p_values = np.empty((len(runs) - 1, len(metrics)))
    for index, column in enumerate(columns[1:]):
        delta = np.stack([column[_per_query_name(m)] for m in metrics], axis=1) - baseline
        low, high = bootstrap_interval(delta, resamples, seed)
        p_values[index] = paired_sign_flip_p_values(delta, resamples, seed)
        difference[names[index + 1]] = {
            metric: Difference(float(d), float(lo), float(hi), float(p))
            for metric, d, lo, hi, p in zip(metrics, delta.mean(axis=0), low, high,
                                            p_values[index], strict=True)}
    adjusted = np.stack([adjusted_p_values(p_values[:, j], correction)
                         for j in range(len(metrics))], axis=1)
    return ModelComparison(
        queries=len(columns[0]["query_id"]), names=names, values=values,
        difference=difference,
        adjusted={name: {metric: float(adjusted[i, j]) for j, metric in enumerate(metrics)}
                  for i, name in enumerate(names[1:])},
        correction=correction, resamples=resamples, seed=seed, runs=runs)


def _by_query(run: RetrievalResult, name: str) -> dict[str, Array]:
    """A run's per-query columns in query-id order."""
    assert run.per_query is not None
    order = np.argsort(np.asarray(run.per_query["query_id"]), kind="stable")
    return {key: np.asarray(values)[order] for key, values in run.per_query.items()}


def _per_query_name(metric: str) -> str:
    """ndcg_at_10 → ndcg@10 (the per-query columns' names); others unchanged."""
    base, at, k = metric.rpartition("_at_")
    return f"{base}@{k}" if at else metric


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
