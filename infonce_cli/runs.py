"""The one pipeline: a request in, a result out, whoever asks.

``run_score``, ``run_sweep`` and ``run_compare`` load and check the inputs a
request names, decide which candidates are masked, score or fit on the streaming
engine, gather across the ranks of a distributed run and summarise into result
objects. The command line and the Python API both call them; neither does any of
this itself.

>>> import numpy as np
>>> from infonce_cli.requests import score_request
>>> rng = np.random.default_rng(0)
>>> q = rng.normal(size=(16, 8)).astype("float32")
>>> result = run_score(score_request(q, q + 0.1, temperature=0.1, device="cpu"))
>>> result.run.n, result.retrieval.accuracy_at_1
(16, 1.0)
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from . import io
from .diagnostics import diagnose, diagnose_retrieval, shares_candidates
from .distributed import Cluster, gather_scores
from .distributed import start as start_cluster
from .distributed import stop as stop_cluster
from .engine import (
    CandidateIds,
    EngineOptions,
    PerSampleScores,
    fold_passes,
    negative_mode,
    score_embeddings,
)
from .errors import GateFailed, InfonceError, InputError, UsageError, arg
from .ranking import (
    fit_retrieval_temperature,
    match_qrels,
    relevant_positions,
)
from .requests import (
    CompareRequest,
    EngineSettings,
    Gates,
    Inputs,
    Masking,
    Report,
    ReportRequest,
    RetrievalCompareRequest,
    RetrievalRequest,
    ScoreRequest,
    SweepRequest,
    is_path,
    retrieval_metric_names,
)
from .results import (
    CompareResult,
    ModelComparison,
    ReportResult,
    RetrievalResult,
    RunInfo,
    ScoreResult,
    SweepResult,
)
from .similarity import Similarity, check_score_range, dtype_name, reduction_dtype
from .summaries import (
    Labels,
    compare_models,
    compare_scores,
    kept_queries,
    summarize_retrieval,
    summarize_score,
    summarize_sweep,
    with_per_sample,
)
from .temperature import prepare_passes, score_at_optimum, sweep_passes, temperature_grid

Array = np.ndarray[Any, Any]
Progress = Callable[[int], AbstractContextManager[Callable[[int], None]]]
"""Given the number of query rows to score, a context that yields ``advance(rows)``."""


def run_score(request: ScoreRequest, progress: Progress | None = None) -> ScoreResult:
    """Score the request's embeddings at one temperature (or the fitted optimum); raise
    ``GateFailed`` carrying the result when a quality gate is missed."""
    auto = request.temperature == "auto"
    tau = 1.0 if auto else float(request.temperature)
    with _cluster(request.engine) as cluster:
        if request.diagnostics and cluster.world > 1:
            raise UsageError(f"{arg('diagnostics')} runs in one process: leave out torchrun")
        options, data, ids, share = _prepare(request.inputs, request.engine, request.masking,
                                             (tau,), cluster)
        if request.diagnostics and shares_candidates(negative_mode(data.arrays[2],
                                                                   options.in_batch)):
            options = replace(options, top_k=request.hubness_k)  # for the hubness
        started = time.perf_counter()
        with _progress(progress, cluster, share) as advance, cluster.together():
            if auto:
                tau, local = score_at_optimum(*data.arrays, options, advance, ids,
                                              cluster.summer())
                options = replace(options, temperatures=(tau,))
            else:
                local = score_embeddings(*data.arrays, options, advance, ids)
        scores = gather_scores(cluster, local)
        labels = _labels(data, request.masking, request.report, ids)
        result = summarize_score(
            scores, _run_info(scores, options, time.perf_counter() - started, cluster), tau,
            labels, temperature_fitted=auto, local=local, first_row=share[0])
        if request.diagnostics:
            result = replace(result, diagnostics=diagnose(
                *data.arrays, scores, tau, kept_queries(scores, labels)[0], options,
                request.hubness_k))
    check_gates(result, request.gates)
    return result


def run_report(request: ReportRequest, progress: Progress | None = None) -> ReportResult:
    """A score with every diagnostic and the worst cases, and a sweep of the same inputs."""
    inputs = request.inputs
    named = {role: str(source) if is_path(source) else f"array {tuple(source.shape)}"
             for role, source in (("query", inputs.query), ("pos", inputs.pos),
                                  ("neg", inputs.neg)) if source is not None}
    return ReportResult(run_score(request.score(), progress),
                        run_sweep(request.sweep(), progress), named)


def run_sweep(request: SweepRequest, progress: Progress | None = None) -> SweepResult:
    """The loss at every grid temperature from one similarity pass, the exact optimum, and
    with ``per_sample`` the per-sample scores there (at the best grid point when there is
    no finite optimum)."""
    grid = request.grid
    temperatures = (grid.temperatures if isinstance(grid.temperatures, tuple)
                    else temperature_grid(grid.min, grid.max, grid.steps, grid.spacing))
    with _cluster(request.engine) as cluster:
        options, data, ids, share = _prepare(request.inputs, request.engine, request.masking,
                                             temperatures[:1], cluster)
        started = time.perf_counter()
        with _progress(progress, cluster, share) as advance, cluster.together():
            passes = prepare_passes(*data.arrays, options, ids)
            swept = sweep_passes(passes, temperatures, advance, cluster.summer())
        scores = gather_scores(cluster, swept.grid)
        labels = _labels(data, request.masking, request.report, ids)
        result = summarize_sweep(
            scores, temperatures, swept.optimum,
            _run_info(scores, options, time.perf_counter() - started, cluster), labels)
        if request.per_sample:
            tau = result.optimum.temperature or result.best_grid.temperature
            with cluster.together():
                result = with_per_sample(result, tau, fold_passes(passes, [tau]), share[0],
                                         labels)
    return result


def run_compare(request: CompareRequest, progress: Progress | None = None) -> CompareResult:
    """Two models on the same pairs, scored with the same options: A, B and B − A with
    paired-bootstrap intervals and permutation p-values; raise ``GateFailed`` with the
    result when ``fail_if_worse`` and B is significantly worse on the chosen metric."""
    cluster = Cluster()
    auto = request.temperature == "auto"
    tau = 1.0 if auto else float(request.temperature)
    options = engine_options(request.engine, (tau,), request.masking.mask_duplicates,
                             request.a.neg is not None, cluster)
    io.check_present([*request.a.paths(), *request.b.paths()])
    models = [load_inputs(inputs, options, cluster, model)
              for inputs, model in ((request.a, "_a"), (request.b, "_b"))]
    if models[0].n != models[1].n:
        raise InputError(f"{models[1].query.label}: has {models[1].n} pairs but "
                         f"{models[0].query.label} has {models[0].n}; compare needs the same "
                         "pairs in the same order")
    scored: list[tuple[PerSampleScores, RunInfo, float]] = []
    masks = False
    with _progress(progress, cluster, (0, 2 * models[0].n)) as advance:
        for data in models:
            ids = masking_ids(data, request.masking, options.device)
            masks = _masks(request.masking, ids)
            started = time.perf_counter()
            if auto:
                fitted, scores = score_at_optimum(*data.arrays, options, advance, ids)
            else:
                fitted, scores = tau, score_embeddings(*data.arrays, options, advance, ids)
            run = _run_info(scores, replace(options, temperatures=(fitted,)),
                            time.perf_counter() - started, cluster)
            scored.append((scores, run, fitted))
    report = request.report
    labels = Labels(recall_at=_recall_at(report), masking=masks,
                    allow_empty=request.masking.allow_empty, resamples=report.bootstrap,
                    seed=report.seed)
    result = compare_scores(scored[0], scored[1], labels, temperature_fitted=auto)
    if request.fail_if_worse and result.worse(request.metric):
        diff = result.difference[request.metric]
        raise GateFailed(f"quality gate failed: B is worse than A on {request.metric} "
                         f"(B − A = {diff.value:.6g}, 95% interval [{diff.ci_low:.6g}, "
                         f"{diff.ci_high:.6g}], p = {diff.p_value:.3g})", result)
    return result


def run_retrieval(request: RetrievalRequest, progress: Progress | None = None,
                  model: str = "") -> RetrievalResult:
    """Exact retrieval over the whole corpus: graded metrics from the position of every
    relevant document, the InfoNCE loss with the relevant documents as positives and
    every other document as a negative, and with ``run`` the top-k list of every query;
    raise ``GateFailed`` with the result when a ``fail_below`` gate is missed. ``model``
    ("_a", "_b", …) follows the names of in-memory arrays in messages."""
    inputs, evaluation = request.inputs, request.evaluation
    io.check_present(inputs.paths())
    auto = request.temperature == "auto"
    tau = 1.0 if auto else float(request.temperature)
    cluster = Cluster()
    options = engine_options(request.engine, (tau,), False, True, cluster)
    query = _embeddings(inputs.query, "query", inputs.query_key, inputs.query_col, model)
    corpus = _embeddings(inputs.corpus, "corpus", inputs.corpus_key, inputs.corpus_col, model)
    if corpus.shape[-1] != query.shape[-1]:
        raise InputError(f"{corpus.label}: vectors have dimension {corpus.shape[-1]} but "
                         f"{query.label} has {query.shape[-1]}")
    cosine = options.similarity is Similarity.COSINE
    queries, documents = (io.check_values(embeddings, nonzero=cosine, norms=not cosine)
                          for embeddings in (query, corpus))
    check_score_range(options.similarity, reduction_dtype(options.dtype), query.shape[-1],
                      (queries.nonzero_norm_min, queries.norm_max), documents.norm_max)
    query_ids = _row_names(inputs.query, inputs.query_ids, inputs.query_id_col,
                           query.shape[0], "query")
    corpus_ids = _row_names(inputs.corpus, inputs.corpus_ids, inputs.corpus_id_col,
                            corpus.shape[0], "corpus")
    qrels = match_qrels(io.load_qrels(str(inputs.qrels)), query_ids, corpus_ids,
                        inputs.ignore_unknown)
    supcon = request.multi_positive == "supcon"
    started = time.perf_counter()
    total = len(qrels.judged.query_row) * (2 if auto else 1)
    with _progress(progress, cluster, (0, total)) as advance:
        if auto:
            tau = fit_retrieval_temperature(query.values, corpus.values, qrels.judged, options,
                                            evaluation.min_relevance, supcon, advance)
            options = replace(options, temperatures=(tau,))
        top_k = max(evaluation.top_k if request.run else 0,
                    request.hubness_k if request.diagnostics else 0)
        relevant = relevant_positions(query.values, corpus.values, qrels.judged, options,
                                      evaluation.min_relevance, supcon, advance, top_k=top_k)
    top = None
    if request.run:
        assert relevant.top is not None
        top = (relevant.top[0][:, :evaluation.top_k], relevant.top[1][:, :evaluation.top_k])
    result = summarize_retrieval(
        qrels, relevant, top, (query_ids, corpus_ids), evaluation,
        _run_info(relevant.scores, options, time.perf_counter() - started, cluster), tau,
        temperature_fitted=auto, supcon=supcon)
    if request.diagnostics:
        assert relevant.top is not None
        result = replace(result, diagnostics=diagnose_retrieval(
            query.values, corpus.values, (qrels.judged.query_row, qrels.judged.doc_row),
            relevant.positive, relevant.scores, relevant.top[1], tau, options,
            request.hubness_k))
    check_retrieval_gates(result, request.fail_below)
    return result


def check_retrieval_gates(result: RetrievalResult,
                          gates: tuple[tuple[str, float], ...] | str | None) -> None:
    """Raise ``GateFailed`` (with the result) when a metric is below its gate."""
    assert isinstance(gates, tuple)
    values = retrieval_metric_values(result)
    failures = [f"{name} {values[name]:.6g} is below {threshold:g}"
                for name, threshold in gates if values[name] < threshold]
    if failures:
        raise GateFailed(f"quality gate failed: {'; '.join(failures)} "
                         f"({arg('fail_below')})", result)


def retrieval_metric_values(result: RetrievalResult) -> dict[str, float]:
    """Every aggregate metric of a retrieval result by its flat name (ndcg_at_10, mrr, …)."""
    flat: dict[str, float] = {}
    for name, value in result.metrics.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{name}_{k}": v for k, v in value.items()})
        elif isinstance(value, float):
            flat[name] = value
    return flat


def run_retrieval_compare(request: RetrievalCompareRequest,
                          progress: Progress | None = None) -> ModelComparison:
    """Several models retrieving for the same queries and qrels, each compared with the
    first on every metric; raise ``GateFailed`` with the comparison when ``fail_if_worse``
    and a model is significantly worse than the baseline on ``metric``."""
    io.check_present([path for inputs in request.models for path in inputs.paths()])
    names = tuple(chr(ord("a") + index) for index in range(len(request.models)))
    runs = tuple(
        run_retrieval(RetrievalRequest(inputs, request.temperature, request.engine,
                                       request.evaluation, request.multi_positive), progress,
                      model=f"_{name}")
        for inputs, name in zip(request.models, names, strict=True))
    queries = [np.sort(np.asarray(run.per_query["query_id"])) for run in runs
               if run.per_query is not None]
    for name, ids in zip(names[1:], queries[1:], strict=True):
        if not np.array_equal(ids, queries[0]):
            raise InputError(f"model {name} evaluates other queries than model a "
                             f"({len(ids)} against {len(queries[0])}); compare needs the same "
                             "queries and qrels")
    at = request.evaluation.at
    assert isinstance(at, tuple)
    result = compare_models(runs, names, retrieval_metric_names(at), request.correction,
                            request.bootstrap, request.seed)
    worse = [name for name in names[1:] if result.worse(name, request.metric)]
    if request.fail_if_worse and worse:
        diffs = "; ".join(f"{name} − a = {result.difference[name][request.metric].value:.6g} "
                          f"(p {request.correction} = {result.adjusted[name][request.metric]:.3g})"
                          for name in worse)
        raise GateFailed(f"quality gate failed: significantly worse than a on "
                         f"{request.metric}: {diffs}", result)
    return result


def check_gates(result: ScoreResult, gates: Gates) -> None:
    """Raise ``GateFailed`` (with the result) when the mean loss or accuracy@1 misses a gate."""
    failures = []
    if gates.fail_above is not None and result.loss.mean > gates.fail_above:
        failures.append(f"mean loss {result.loss.mean:.6g} is above {arg('fail_above')} "
                        f"{gates.fail_above:g}")
    accuracy = result.retrieval.accuracy_at_1
    if gates.fail_below_accuracy is not None and accuracy < gates.fail_below_accuracy:
        failures.append(f"accuracy@1 {accuracy:.6g} is below {arg('fail_below_accuracy')} "
                        f"{gates.fail_below_accuracy:g}")
    if failures:
        raise GateFailed(f"quality gate failed: {'; '.join(failures)}", result)


# ---------------------------------------------------------------- options


def _prepare(
    inputs: Inputs, settings: EngineSettings, masking: Masking,
    temperatures: tuple[float, ...], cluster: Cluster,
) -> tuple[EngineOptions, LoadedInputs, CandidateIds | None, tuple[int, int]]:
    """Engine options, the loaded inputs, the masking keys and this rank's share of the
    queries: what every run needs before it scores."""
    options = engine_options(settings, temperatures, masking.mask_duplicates,
                             inputs.neg is not None, cluster)
    with cluster.together():
        io.check_present(inputs.paths())
        data = load_inputs(inputs, options, cluster)
        ids = masking_ids(data, masking, options.device)
    share = cluster.share(data.n)
    if cluster.world > 1:
        options = replace(options, query_rows=share)
    return options, data, ids, share


def engine_options(
    settings: EngineSettings, temperatures: tuple[float, ...], mask_duplicates: bool,
    has_negatives: bool, cluster: Cluster,
) -> EngineOptions:
    """Engine options from a request's settings: the device checked, the dtype resolved."""
    if settings.in_batch and not has_negatives:
        raise UsageError(f"{arg('in_batch')} pools the batch with the negatives of {arg('neg')} "
                         f"(paired (N, M, d) or shared (K, d)): give {arg('neg')}; without it, "
                         "negatives are in-batch already")
    device = resolve_device(settings.device)
    if cluster.world > 1 and device.type == "cuda":
        device = torch.device("cuda", cluster.local_rank)
    dtype = settings.dtype if isinstance(settings.dtype, torch.dtype) else getattr(
        torch, str(settings.dtype))
    assert isinstance(settings.max_memory, int)
    return EngineOptions(
        temperatures=temperatures,
        similarity=Similarity(str(settings.similarity)),
        in_batch=settings.in_batch,
        batch_size=settings.batch_size,
        symmetric=settings.symmetric,
        dtype=dtype,
        device=device,
        max_memory=settings.max_memory,
        allow_tf32=settings.allow_tf32,
        mask_duplicates=mask_duplicates,
    )


def resolve_device(device: Any) -> torch.device:
    """auto, cpu, cuda or cuda:N (or a torch.device) → a torch.device that exists here."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise UsageError(f"{arg('device')}: unknown device {str(device)!r}; use auto, cpu, cuda "
                         "or cuda:N")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InfonceError(f"{arg('device')} {device}: no CUDA device is available here "
                               f"(torch {torch.__version__}); use {arg('device')} cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InfonceError(f"{arg('device')} {device}: only {torch.cuda.device_count()} "
                               "CUDA device(s) are available")
    return resolved


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LoadedInputs:
    """Checked embeddings and the ids that name, mask and group their rows."""

    query: io.Embeddings
    positive: io.Embeddings
    negatives: io.Embeddings | None
    row_ids: Array | None
    """Ids of the pairs: the ``id_col`` column, else the positive ids."""
    positive_ids: Array | None
    negative_ids: Array | None
    groups: Array | None
    """Query ids: rows with the same one share a query (several positives)."""

    @property
    def n(self) -> int:
        return self.query.shape[0]

    @property
    def arrays(self) -> tuple[Any, Any, Any]:
        negatives = None if self.negatives is None else self.negatives.values
        return self.query.values, self.positive.values, negatives


def load_inputs(inputs: Inputs, options: EngineOptions, cluster: Cluster,
                model: str = "") -> LoadedInputs:
    """Load and check every input of a request; in a distributed run each rank checks the
    values of its share of the rows. ``model`` ("_a", "_b") follows the names of in-memory
    arrays in messages."""
    query = _embeddings(inputs.query, "query", inputs.query_key, inputs.query_col, model)
    positive = _embeddings(inputs.pos, "pos", inputs.pos_key, inputs.pos_col, model)
    negatives = None if inputs.neg is None else _embeddings(
        inputs.neg, "neg", inputs.neg_key, inputs.neg_col, model, ndims=(2, 3))
    io.check_pairs(query, positive, negatives)
    share = cluster.share(query.shape[0])
    cosine = options.similarity is Similarity.COSINE
    stats = []
    for embeddings in (query, positive, negatives):
        if embeddings is not None:
            paired_rows = embeddings is not negatives or len(embeddings.shape) == 3
            rows = share if paired_rows else cluster.share(embeddings.shape[0])
            stats.append(io.check_values(embeddings, nonzero=cosine, rows=rows,
                                         norms=not cosine))
    check_score_range(options.similarity, reduction_dtype(options.dtype), query.shape[-1],
                      (stats[0].nonzero_norm_min, stats[0].norm_max),
                      max(side.norm_max for side in stats[1:]))
    n = query.shape[0]
    row_ids = None
    if inputs.id_col is not None:
        source = next((s for s in (inputs.query, inputs.pos)
                       if is_path(s) and io.is_parquet(str(s))), None)
        if source is None:
            raise UsageError(f"{arg('id_col')} needs {arg('query')} or {arg('pos')} to be a "
                             "Parquet file")
        row_ids = _checked_ids(io.load_ids(str(source), inputs.id_col), (n,),
                               f"{io.printable_path(str(source))}:{inputs.id_col}", "ids")
    positive_ids = _ids(inputs.pos_ids, inputs.pos_id_col, inputs.pos, "pos", (n,))
    negative_ids = None
    if negatives is not None:
        negative_ids = _ids(inputs.neg_ids, inputs.neg_id_col, inputs.neg, "neg",
                            negatives.shape[:-1])
    groups = _ids(inputs.query_ids, inputs.query_id_col, inputs.query, "query", (n,))
    if groups is not None and negatives is not None:
        raise UsageError(f"{arg('query_ids')} works with in-batch negatives (leave out "
                         f"{arg('neg')})")
    return LoadedInputs(query, positive, negatives,
                        row_ids if row_ids is not None else positive_ids,
                        positive_ids, negative_ids, groups)


def _embeddings(source: Any, role: str, key: str | None, column: str | None,
                model: str = "", ndims: tuple[int, ...] = (2,)) -> io.Embeddings:
    if is_path(source):
        return io.load_embeddings(str(source), key=key, column=column, ndims=ndims)
    if key is not None or column is not None:
        chosen = f"{role}_key" if key is not None else f"{role}_col"
        raise UsageError(f"{arg(chosen)} picks from a file, but {arg(role)} is an array")
    values = _as_numpy(source)
    io.check_float_array(values, role + model, ndims)
    return io.Embeddings(values, role + model)


def _as_numpy(source: Any) -> Array:
    """An in-memory array as NumPy (tensors detached and moved to the CPU; bfloat16, which
    NumPy lacks, widened exactly to float32)."""
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(source)


def _ids(source: Any, column: str | None, embeddings: Any, role: str,
         shape: tuple[int, ...]) -> Array | None:
    """Ids of a role's rows from a file or an array (``{role}_ids``), or from a column of
    the role's Parquet file (``{role}_id_col``), checked against the rows' shape."""
    if source is None and column is None:
        return None
    if column is not None:
        if not (is_path(embeddings) and io.is_parquet(str(embeddings))):
            raise UsageError(f"{arg(role + '_id_col')} names a column of a Parquet "
                             f"{arg(role)} file")
        return _checked_ids(io.load_ids(str(embeddings), column), shape,
                            f"{io.printable_path(str(embeddings))}:{column}", f"{role} ids")
    if is_path(source):
        return _checked_ids(io.load_id_array(str(source)), shape,
                            io.printable_path(str(source)), f"{role} ids")
    values = _as_numpy(source)
    if values.dtype.kind not in "iuUS":
        raise InputError(f"{role}_ids: ids must be integers or strings, got {values.dtype.name}")
    return _checked_ids(values, shape, f"{role}_ids", f"{role} ids")


def _checked_ids(ids: Array, shape: tuple[int, ...], label: str, what: str) -> Array:
    if ids.shape != tuple(shape):
        raise InputError(f"{label}: expected {what} of shape {tuple(shape)}, got {ids.shape}")
    return ids


def masking_ids(data: LoadedInputs, masking: Masking, device: torch.device) -> CandidateIds | None:
    """What marks false negatives: candidates whose id is the query's positive id, and with
    several positives per query scored NT-Xent style, the query's other positives."""
    group = data.groups if masking.multi_positive == "ntxent" else None
    if data.positive_ids is None and data.negative_ids is None and group is None:
        return None
    return candidate_ids(data.positive_ids, data.negative_ids, group, device)


def candidate_ids(positive: Array | None, negative: Array | None, group: Array | None = None,
                  device: torch.device | None = None) -> CandidateIds:
    """Integer keys for masking, from ids of any type: equal ids get equal keys, across the
    positive and negative ids (ids are compared as text)."""
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


def _row_names(embeddings: Any, ids: Any, column: str | None, rows: int, role: str) -> Array:
    """Ids of the rows of the query or corpus input, as text: from ``{role}_ids`` (a file
    or an array), from ``{role}_id_col`` or the one default id column of a Parquet input,
    else the row numbers."""
    label = f"{role}_ids"
    if ids is not None:
        values = io.load_row_ids(str(ids)) if is_path(ids) else _as_numpy(ids).astype(str)
        label = io.printable_path(str(ids)) if is_path(ids) else label
    else:
        if column is None and is_path(embeddings) and io.is_parquet(str(embeddings)):
            column = io.default_id_column(str(embeddings), argument=f"{role}_id_col")
        if column is None:
            return np.arange(rows).astype(str)
        if not (is_path(embeddings) and io.is_parquet(str(embeddings))):
            raise UsageError(f"{arg(role + '_id_col')} names a column of a Parquet "
                             f"{arg(role)} file")
        values = io.load_ids(str(embeddings), column).astype(str)
        label = f"{io.printable_path(str(embeddings))}:{column}"
    if values.shape != (rows,):
        raise InputError(f"{label}: expected {rows} ids, one per row, got shape {values.shape}")
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        repeated = int(np.argmax(counts > 1))
        rows_of = np.flatnonzero(values == unique[repeated])
        raise InputError(f"{label}: id {io.quoted(unique[repeated])} names rows {rows_of[0]} "
                         f"and {rows_of[1]}; ids must be unique")
    return values


# ---------------------------------------------------------------- plumbing


def _labels(data: LoadedInputs, masking: Masking, report: Report,
            ids: CandidateIds | None) -> Labels:
    return Labels(
        recall_at=_recall_at(report), masking=_masks(masking, ids),
        allow_empty=masking.allow_empty, row_ids=data.row_ids, negative_ids=data.negative_ids,
        groups=data.groups, supcon=masking.multi_positive == "supcon",
        resamples=report.bootstrap if report.ci else 0, seed=report.seed, worst=report.worst)


def _masks(masking: Masking, ids: CandidateIds | None) -> bool:
    return ids is not None or masking.mask_duplicates


def _recall_at(report: Report) -> tuple[int, ...]:
    assert isinstance(report.recall_at, tuple)
    return report.recall_at


def _run_info(scores: PerSampleScores, options: EngineOptions, seconds: float,
              cluster: Cluster) -> RunInfo:
    return RunInfo(
        n=int(scores.loss.shape[0]),
        similarity=options.similarity.value,
        negatives=scores.mode.value,
        device=str(options.device),
        dtype=dtype_name(options.dtype),
        seconds=seconds,
        batch_size=options.batch_size,
        symmetric=options.symmetric,
        rank=cluster.rank,
        world=cluster.world,
    )


@contextlib.contextmanager
def _cluster(settings: EngineSettings) -> Iterator[Cluster]:
    """This process's place in a torchrun launch (alone otherwise), left at the end."""
    cluster = start_cluster(str(settings.device))
    try:
        yield cluster
    finally:
        stop_cluster()


@contextlib.contextmanager
def _progress(progress: Progress | None, cluster: Cluster,
              share: tuple[int, int]) -> Iterator[Callable[[int], None] | None]:
    """Progress over this rank's rows, shown by the leader only."""
    if progress is None or not cluster.leader:
        yield None
        return
    with progress(share[1] - share[0]) as advance:
        yield advance
