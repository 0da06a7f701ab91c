"""Requests: what to load and what to compute, as frozen dataclasses. No torch, no I/O.

The command line parses its options into one of these and the Python API builds
the same one from keyword arguments; ``runs.py`` carries it out. Every field is
named as its command-line flag in snake_case (``--mask-duplicates`` is
``mask_duplicates``), and the builders at the bottom take exactly those names,
so one option means one thing wherever it is given.

>>> request = score_request("q.npy", "p.npy", temperature="auto", mask_duplicates=True)
>>> request.temperature, request.masking.mask_duplicates, request.inputs.neg
('auto', True, None)
>>> score_request("q.npy", "p.npy", temprature=0.1)
Traceback (most recent call last):
...
infonce_cli.errors.UsageError: unknown option 'temprature'; did you mean 'temperature'?
"""

from __future__ import annotations

import difflib
import math
import operator
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UsageError, arg
from .io.sources import STDIN

Source = Any
"""An input: a path (str or os.PathLike), or an array (NumPy array or torch tensor)."""

HUBNESS_K = 10
"""The default k of the k-occurrence whose skewness measures hubness."""

REPORT_WORST = 10
"""The worst cases a report lists by default."""

MAX_STEPS = 10_000
"""The most grid temperatures a sweep takes (each one costs an exponential per score)."""

SIMILARITIES = ("cosine", "dot", "l2")
DTYPES = ("float32", "float64", "bfloat16", "float16")
MULTI_POSITIVE = ("ntxent", "supcon")
SPACINGS = ("log", "linear")


@dataclass(frozen=True)
class Inputs:
    """The embeddings of one model and the ids that name their rows.

    ``query``, ``pos`` (N, d) and ``neg`` ((N, M, d) paired or (K, d) shared) are paths
    or arrays; ``*_key`` picks an array of an .npz file and ``*_col`` a column of a
    Parquet file. ``id_col`` names the pairs in the per-sample output; ``pos_ids`` and
    ``neg_ids`` (files, arrays, or ``*_id_col`` columns) mark false negatives;
    ``query_ids`` group rows that share a query (several positives).
    """

    query: Source
    pos: Source
    neg: Source | None = None
    query_key: str | None = None
    pos_key: str | None = None
    neg_key: str | None = None
    query_col: str | None = None
    pos_col: str | None = None
    neg_col: str | None = None
    id_col: str | None = None
    query_ids: Source | None = None
    query_id_col: str | None = None
    pos_ids: Source | None = None
    pos_id_col: str | None = None
    neg_ids: Source | None = None
    neg_id_col: str | None = None

    def __post_init__(self) -> None:
        for name in ("query", "pos", "neg"):
            _one_of_both(f"{name}_ids", getattr(self, f"{name}_ids"), f"{name}_id_col",
                         getattr(self, f"{name}_id_col"))
        if self.neg is None:
            for name in ("neg_key", "neg_col", "neg_ids", "neg_id_col"):
                if getattr(self, name) is not None:
                    raise UsageError(f"{arg(name)} names the negatives: give {arg('neg')} too")
        _one_stdin(self.named_sources())

    def named_sources(self, suffix: str = "") -> list[tuple[str, Any, str | None]]:
        """(option name, input, column) for every input, the option names ending in
        ``suffix``."""
        return [(name + suffix, getattr(self, name), getattr(self, f"{name}_col", None))
                for name in ("query", "pos", "neg", "query_ids", "pos_ids", "neg_ids")]

    def paths(self) -> list[str]:
        """Every file this request reads (not arrays), for the output guards."""
        return [str(source) for _, source, _ in self.named_sources() if is_path(source)]


@dataclass(frozen=True)
class EngineSettings:
    """How the scores are computed: similarity, negatives, precision, device, memory."""

    similarity: str = "cosine"
    in_batch: bool = False
    batch_size: int | None = None
    symmetric: bool = False
    device: Any = "auto"
    """auto, cpu, cuda or cuda:N (or a torch.device)."""
    dtype: Any = "float32"
    """float32, float64, bfloat16 or float16 (or a torch.dtype)."""
    max_memory: int | str = "512MiB"
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        _choice("similarity", self.similarity, SIMILARITIES)
        if isinstance(self.dtype, str):
            _choice("dtype", self.dtype, DTYPES)
        if self.batch_size is not None and not _whole(self.batch_size, 1):
            raise UsageError(f"{arg('batch_size')} must be at least 1, got {self.batch_size}")
        object.__setattr__(self, "max_memory", parse_memory(self.max_memory))


@dataclass(frozen=True)
class Masking:
    """Which candidates are not negatives, and how several positives per query count."""

    mask_duplicates: bool = False
    allow_empty: bool = False
    multi_positive: str = "ntxent"

    def __post_init__(self) -> None:
        _choice("multi_positive", self.multi_positive, MULTI_POSITIVE)


@dataclass(frozen=True)
class Report:
    """What a result holds beyond the aggregate loss: cut-offs, intervals, worst cases."""

    recall_at: tuple[int, ...] | str = (1, 5, 10)
    ci: bool = False
    bootstrap: int = 1000
    seed: int = 0
    worst: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "recall_at", parse_recall_at(self.recall_at))
        _check_bootstrap(self.bootstrap)
        if not _whole(self.worst, 0):
            raise UsageError(f"{arg('worst')} must be at least 0, got {self.worst}")
        if not _whole(self.seed, 0):
            raise UsageError(f"{arg('seed')} must be a whole number ≥ 0, got {self.seed}")


@dataclass(frozen=True)
class Gates:
    """Quality gates: a run that misses one raises ``GateFailed`` (exit 3) after its result."""

    fail_above: float | None = None
    """The mean loss (nats, ≥ 0) above which the run fails."""
    fail_below_accuracy: float | None = None
    """The accuracy@1 (a fraction in [0, 1]) below which the run fails."""

    def __post_init__(self) -> None:
        if self.fail_above is not None and not (math.isfinite(self.fail_above)
                                                and self.fail_above >= 0):
            raise UsageError(f"{arg('fail_above')} is a mean loss in nats, a number ≥ 0; got "
                             f"{self.fail_above:g}")
        if self.fail_below_accuracy is not None and not 0 <= self.fail_below_accuracy <= 1:
            raise UsageError(f"{arg('fail_below_accuracy')} is a fraction between 0 and 1 "
                             f"(0.7 for 70%); got {self.fail_below_accuracy:g}")


@dataclass(frozen=True)
class Grid:
    """The temperatures of a sweep: an explicit list, or ``steps`` from ``min`` to ``max``."""

    temperatures: tuple[float, ...] | str | None = None
    min: float = 0.01
    max: float = 1.0
    steps: int = 50
    spacing: str = "log"

    def __post_init__(self) -> None:
        _choice("spacing", self.spacing, SPACINGS)
        if isinstance(self.temperatures, str):
            object.__setattr__(self, "temperatures",
                               _parse_floats(self.temperatures, "temperatures"))
        if self.temperatures is not None:
            values = tuple(float(t) for t in self.temperatures)
            if not values:
                raise UsageError(f"{arg('temperatures')}: give at least one temperature")
            if len(values) > MAX_STEPS:
                raise UsageError(f"{arg('temperatures')}: at most {MAX_STEPS} temperatures, "
                                 f"got {len(values)}")
            for value in values:
                if not value > 0:
                    raise UsageError(f"{arg('temperatures')}: every temperature must be > 0, "
                                     f"got {value:g}")
                if not math.isfinite(value):
                    raise UsageError(f"{arg('temperatures')}: every temperature must be "
                                     f"finite, got {value:g}")
            object.__setattr__(self, "temperatures", tuple(sorted(set(values))))
            return
        if not (self.min > 0 and math.isfinite(self.min) and math.isfinite(self.max)):
            raise UsageError(f"{arg('min')} must be a finite number > 0, got {self.min:g}")
        if not self.min < self.max:
            raise UsageError(f"{arg('min')} ({self.min:g}) must be below {arg('max')} "
                             f"({self.max:g})")
        if not _whole(self.steps, 2):
            raise UsageError(f"{arg('steps')} must be at least 2, got {self.steps}")
        if self.steps > MAX_STEPS:
            raise UsageError(f"{arg('steps')} must be at most {MAX_STEPS}, got {self.steps}")


@dataclass(frozen=True)
class ScoreRequest:
    """Score embeddings at one temperature (a number > 0, or "auto" to fit the optimum)."""

    inputs: Inputs
    temperature: float | str = 0.05
    engine: EngineSettings = field(default_factory=EngineSettings)
    masking: Masking = field(default_factory=Masking)
    report: Report = field(default_factory=Report)
    gates: Gates = field(default_factory=Gates)
    diagnostics: bool = False
    """Add the geometry of both sides and the calibration of the softmax."""
    hubness_k: int = HUBNESS_K
    """The k of the k-occurrence whose skewness measures hubness."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", parse_temperature(self.temperature))
        _check_hubness_k(self.hubness_k, self.diagnostics)
        if self.diagnostics and self.engine.symmetric:
            raise UsageError(f"{arg('diagnostics')} describes one direction's softmax: leave "
                             f"out {arg('symmetric')}")


@dataclass(frozen=True)
class SweepRequest:
    """The loss over a temperature grid and the exact optimum; with ``per_sample``, the
    per-sample scores at the optimum too."""

    inputs: Inputs
    grid: Grid = field(default_factory=Grid)
    engine: EngineSettings = field(default_factory=EngineSettings)
    masking: Masking = field(default_factory=Masking)
    report: Report = field(default_factory=Report)
    per_sample: bool = False


@dataclass(frozen=True)
class ReportRequest:
    """A score with every diagnostic, the worst cases, and a temperature sweep of the same
    inputs: what a person looks at to review a model."""

    inputs: Inputs
    temperature: float | str = 0.05
    grid: Grid = field(default_factory=Grid)
    engine: EngineSettings = field(default_factory=EngineSettings)
    masking: Masking = field(default_factory=Masking)
    report: Report = field(default_factory=lambda: Report(worst=REPORT_WORST))
    hubness_k: int = HUBNESS_K

    def score(self) -> ScoreRequest:
        return ScoreRequest(self.inputs, self.temperature, self.engine, self.masking,
                            self.report, diagnostics=True, hubness_k=self.hubness_k)

    def sweep(self) -> SweepRequest:
        return SweepRequest(self.inputs, self.grid, self.engine, self.masking, self.report)

    def __post_init__(self) -> None:
        self.score()  # refuses what a score would


@dataclass(frozen=True)
class CompareRequest:
    """Two models scored on the same pairs with the same options; B − A per metric."""

    a: Inputs
    b: Inputs
    temperature: float | str = 0.05
    engine: EngineSettings = field(default_factory=EngineSettings)
    masking: Masking = field(default_factory=Masking)
    report: Report = field(default_factory=Report)
    metric: str = "loss_mean"
    """The metric ``fail_if_worse`` judges: loss_mean, accuracy_at_1, mrr, ndcg_at_10 or
    recall_at_<k> for a k of ``recall_at``."""
    fail_if_worse: bool = False

    def __post_init__(self) -> None:
        _one_stdin(self.a.named_sources("_a") + self.b.named_sources("_b"))
        object.__setattr__(self, "temperature", parse_temperature(self.temperature))
        recall_at = self.report.recall_at
        assert isinstance(recall_at, tuple)
        metrics = compare_metrics(recall_at)
        if self.metric not in metrics:
            raise UsageError(f"{arg('metric')}: unknown metric {self.metric!r}; choose one of "
                             f"{', '.join(metrics)}")


@dataclass(frozen=True)
class RetrievalInputs:
    """Queries and a corpus with the ids that name their rows, and qrels that say which
    documents are relevant to which query (BEIR, TREC, JSONL or Parquet).

    Ids come from ``query_ids``/``corpus_ids`` (a text file of one id per line, an .npy
    file or an array), else from a Parquet id column (``*_id_col``, by default the one
    column named id, _id, query-id or corpus-id), else are the row numbers.
    """

    query: Source
    corpus: Source
    qrels: str
    query_key: str | None = None
    corpus_key: str | None = None
    query_col: str | None = None
    corpus_col: str | None = None
    query_ids: Source | None = None
    corpus_ids: Source | None = None
    query_id_col: str | None = None
    corpus_id_col: str | None = None
    ignore_unknown: bool = False
    """Drop (and count) judgements naming a query or document that is not in the inputs,
    instead of refusing them."""

    def __post_init__(self) -> None:
        for name in ("query", "corpus"):
            _one_of_both(f"{name}_ids", getattr(self, f"{name}_ids"), f"{name}_id_col",
                         getattr(self, f"{name}_id_col"))
        if not is_path(self.qrels):
            raise UsageError(f"{arg('qrels')} must be the path of a qrels file (TREC, BEIR "
                             f"TSV, JSONL or Parquet), got a {type(self.qrels).__name__}")
        _one_stdin(self.named_sources())

    def named_sources(self) -> list[tuple[str, Any, str | None]]:
        """(option name, input, column) for every input."""
        return [(name, getattr(self, name), getattr(self, f"{name}_col", None))
                for name in ("query", "corpus", "qrels", "query_ids", "corpus_ids")]

    def paths(self) -> list[str]:
        """Every file this request reads, for the output guards."""
        return [str(source) for _, source, _ in self.named_sources() if is_path(source)]


GAINS = ("linear", "exponential")


@dataclass(frozen=True)
class Evaluation:
    """Which metrics: cut-offs, the gain of a relevance grade in nDCG, the relevance that
    makes a positive of the loss, and how many documents the top-k list keeps."""

    at: tuple[int, ...] | str = (1, 5, 10, 100)
    gain: str = "linear"
    """linear: gain = rel (ranx ``ndcg``); exponential: 2^rel − 1 (ranx ``ndcg_burges``)."""
    min_relevance: int = 1
    top_k: int = 100

    def __post_init__(self) -> None:
        _choice("gain", self.gain, GAINS)
        object.__setattr__(self, "at", parse_cut_offs(self.at, "at"))
        if not _whole(self.min_relevance, 1):
            raise UsageError(f"{arg('min_relevance')} must be a whole number ≥ 1, got "
                             f"{self.min_relevance}")
        if not _whole(self.top_k, 1):
            raise UsageError(f"{arg('top_k')} must be at least 1, got {self.top_k}")


@dataclass(frozen=True)
class RetrievalRequest:
    """Exact retrieval over a whole corpus: graded metrics from the position of every
    relevant document, InfoNCE with the relevant documents as positives and every other
    document as a negative, and with ``run`` the top-k list of every query."""

    inputs: RetrievalInputs
    temperature: float | str = 0.05
    engine: EngineSettings = field(default_factory=EngineSettings)
    evaluation: Evaluation = field(default_factory=Evaluation)
    multi_positive: str = "ntxent"
    run: bool = False
    fail_below: tuple[tuple[str, float], ...] | str | None = None
    """Gates: (metric, value) pairs such as ("ndcg_at_10", 0.4), or "ndcg_at_10=0.4,mrr=0.5"."""
    diagnostics: bool = False
    """Add the geometry of the queries and the corpus, hubness and calibration."""
    hubness_k: int = HUBNESS_K

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", parse_temperature(self.temperature))
        _choice("multi_positive", self.multi_positive, MULTI_POSITIVE)
        _check_hubness_k(self.hubness_k, self.diagnostics)
        engine = self.engine
        for name in ("in_batch", "symmetric"):
            if getattr(engine, name):
                raise UsageError(f"{arg(name)} does not apply to retrieval: every corpus "
                                 "document is a candidate of every query")
        if engine.batch_size is not None:
            raise UsageError(f"{arg('batch_size')} does not apply to retrieval: every corpus "
                             "document is a candidate of every query")
        gates = _gates(self.fail_below)
        at = self.evaluation.at
        assert isinstance(at, tuple)
        known = retrieval_metric_names(at)
        for name, _ in gates:
            if name not in known:
                raise UsageError(f"{arg('fail_below')}: unknown metric {name!r}; choose one of "
                                 f"{', '.join(known)}")
        object.__setattr__(self, "fail_below", gates)


def retrieval_metric_names(at: tuple[int, ...]) -> tuple[str, ...]:
    """The aggregate metrics of a retrieval run, flat: ndcg_at_10, mrr, map, …"""
    per_cut = ("ndcg", "recall", "precision", "mrr", "map", "hit_rate")
    return (*(f"{name}_at_{k}" for name in per_cut for k in at), "mrr", "map", "r_precision")


def _gates(value: tuple[tuple[str, float], ...] | str | None) -> tuple[tuple[str, float], ...]:
    """'ndcg_at_10=0.4,mrr=0.5' (or pairs) → (("ndcg_at_10", 0.4), ("mrr", 0.5)); every
    value a fraction in [0, 1]."""
    if value is None:
        return ()
    pairs: list[tuple[str, float]] = []
    items = [part for part in value.split(",") if part.strip()] if isinstance(value, str) \
        else [f"{name}={threshold}" for name, threshold in value]
    for item in items:
        name, _, number = item.partition("=")
        try:
            threshold = float(number)
        except ValueError:
            raise UsageError(f"{arg('fail_below')}: expected METRIC=VALUE like ndcg_at_10=0.4, "
                             f"got {item.strip()!r}") from None
        if not 0 <= threshold <= 1:
            raise UsageError(f"{arg('fail_below')}: {name.strip()} is a fraction between 0 and "
                             f"1; got {threshold:g}")
        pairs.append((name.strip(), threshold))
    return tuple(pairs)


def retrieval_request(query: Source, corpus: Source, qrels: str,
                      **options: Any) -> RetrievalRequest:
    """A RetrievalRequest from options named as the command line's flags in snake_case."""
    sections = _sections(options, RetrievalInputs, EngineSettings, Evaluation,
                         extra=("temperature", "multi_positive", "run", "fail_below",
                                "diagnostics", "hubness_k"), request=RetrievalRequest)
    return RetrievalRequest(RetrievalInputs(query, corpus, qrels, **sections[RetrievalInputs]),
                            engine=EngineSettings(**sections[EngineSettings]),
                            evaluation=Evaluation(**sections[Evaluation]), **sections[None])


@dataclass(frozen=True)
class RetrievalCompareRequest:
    """Several models retrieving from their own corpus for the same queries and qrels,
    each compared with the first (the baseline) on every metric: the differences with
    paired-bootstrap intervals, and permutation p-values adjusted over the models
    (``correction``: holm or bonferroni) per metric."""

    models: tuple[RetrievalInputs, ...]
    temperature: float | str = 0.05
    engine: EngineSettings = field(default_factory=EngineSettings)
    evaluation: Evaluation = field(default_factory=Evaluation)
    multi_positive: str = "ntxent"
    bootstrap: int = 1000
    seed: int = 0
    correction: str = "holm"
    metric: str = "ndcg_at_10"
    """The metric ``fail_if_worse`` judges."""
    fail_if_worse: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", parse_temperature(self.temperature))
        _choice("multi_positive", self.multi_positive, MULTI_POSITIVE)
        _choice("correction", self.correction, ("holm", "bonferroni"))
        if not 2 <= len(self.models) <= 26:
            raise UsageError(f"compare takes 2 to 26 models (named a to z), got "
                             f"{len(self.models)}")
        _one_stdin([named for model in self.models for named in model.named_sources()])
        _check_bootstrap(self.bootstrap)
        at = self.evaluation.at
        assert isinstance(at, tuple)
        known = retrieval_metric_names(at)
        if self.metric not in known:
            raise UsageError(f"{arg('metric')}: unknown metric {self.metric!r}; choose one of "
                             f"{', '.join(known)}")


def retrieval_compare_request(queries: list[Source], corpora: list[Source], qrels: str,
                              **options: Any) -> RetrievalCompareRequest:
    """A RetrievalCompareRequest: model i is ``queries[i]`` retrieving from ``corpora[i]``;
    the input options (columns, keys, ids) apply to every model."""
    if len(queries) != len(corpora):
        raise UsageError(f"give one corpus per model: {len(queries)} query inputs, "
                         f"{len(corpora)} corpora")
    sections = _sections(options, RetrievalInputs, EngineSettings, Evaluation,
                         extra=("temperature", "multi_positive", "bootstrap", "seed",
                                "correction", "metric", "fail_if_worse"),
                         request=RetrievalCompareRequest)
    models = tuple(RetrievalInputs(query, corpus, qrels, **sections[RetrievalInputs])
                   for query, corpus in zip(queries, corpora, strict=True))
    return RetrievalCompareRequest(models, engine=EngineSettings(**sections[EngineSettings]),
                                   evaluation=Evaluation(**sections[Evaluation]),
                                   **sections[None])


def compare_metrics(recall_at: tuple[int, ...]) -> tuple[str, ...]:
    """The per-sample metrics a comparison reports."""
    return ("loss_mean", "accuracy_at_1", "mrr", "ndcg_at_10",
            *(f"recall_at_{k}" for k in recall_at))


# ---------------------------------------------------------------- builders


def score_request(query: Source, pos: Source, neg: Source | None = None,
                  **options: Any) -> ScoreRequest:
    """A ScoreRequest from the command line's options, named as its flags in snake_case."""
    sections = _sections(options, Inputs, EngineSettings, Masking, Report, Gates,
                         extra=("temperature", "diagnostics", "hubness_k"), request=ScoreRequest)
    return ScoreRequest(Inputs(query, pos, neg, **sections[Inputs]),
                        engine=EngineSettings(**sections[EngineSettings]),
                        masking=Masking(**sections[Masking]), report=Report(**sections[Report]),
                        gates=Gates(**sections[Gates]), **sections[None])


def sweep_request(query: Source, pos: Source, neg: Source | None = None,
                  **options: Any) -> SweepRequest:
    """A SweepRequest from options named as the command line's flags in snake_case."""
    sections = _sections(options, Inputs, Grid, EngineSettings, Masking, Report,
                         extra=("per_sample",), request=SweepRequest)
    return SweepRequest(Inputs(query, pos, neg, **sections[Inputs]), Grid(**sections[Grid]),
                        EngineSettings(**sections[EngineSettings]),
                        Masking(**sections[Masking]), Report(**sections[Report]),
                        **sections[None])


def report_request(query: Source, pos: Source, neg: Source | None = None,
                   **options: Any) -> ReportRequest:
    """A ReportRequest from options named as the command line's flags in snake_case."""
    sections = _sections(options, Inputs, Grid, EngineSettings, Masking, Report,
                         extra=("temperature", "hubness_k"), request=ReportRequest)
    report = {"worst": REPORT_WORST, **sections[Report]}
    return ReportRequest(Inputs(query, pos, neg, **sections[Inputs]), grid=Grid(**sections[Grid]),
                         engine=EngineSettings(**sections[EngineSettings]),
                         masking=Masking(**sections[Masking]), report=Report(**report),
                         **sections[None])


def compare_request(query_a: Source, pos_a: Source, query_b: Source, pos_b: Source,
                    neg_a: Source | None = None, neg_b: Source | None = None,
                    **options: Any) -> CompareRequest:
    """A CompareRequest: the input options (columns, keys, ids) apply to both models."""
    if (neg_a is None) != (neg_b is None):
        raise UsageError(f"give negatives for both models ({arg('neg_a')} and {arg('neg_b')}) "
                         "or neither")
    sections = _sections(options, Inputs, EngineSettings, Masking, Report,
                         extra=("temperature", "metric", "fail_if_worse"),
                         request=CompareRequest)
    shared = sections[Inputs]
    return CompareRequest(Inputs(query_a, pos_a, neg_a, **shared),
                          Inputs(query_b, pos_b, neg_b, **shared),
                          engine=EngineSettings(**sections[EngineSettings]),
                          masking=Masking(**sections[Masking]),
                          report=Report(**sections[Report]), **sections[None])


def _sections(options: dict[str, Any], *kinds: type, extra: tuple[str, ...],
              request: type) -> dict[type | None, dict[str, Any]]:
    """Sort flat options into the dataclass that has a field of that name (``None``: the
    ``request``'s own fields in ``extra``), each of the type its field declares; an unknown
    name is a usage error."""
    owners: dict[str, type | None] = dict.fromkeys(extra)
    for kind in kinds:
        owners.update({f.name: kind for f in fields(kind)
                       if f.name not in ("query", "pos", "neg", "corpus", "qrels")})
    sorted_options: dict[type | None, dict[str, Any]] = {kind: {} for kind in (*kinds, None)}
    annotations = {f.name: f.type for kind in (*kinds, request) for f in fields(kind)}
    for name, value in options.items():
        if name not in owners:
            close = difflib.get_close_matches(name, list(owners), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown option {name!r}{hint}")
        sorted_options[owners[name]][name] = _typed(name, value, annotations.get(name))
    return sorted_options


def _typed(name: str, value: Any, annotation: Any) -> Any:
    """A flag as a bool and a count as an int (NumPy's scalars included), or a refusal:
    ``"false"`` would be true, a file name given to ``per_sample`` or ``run`` would write
    nothing, and ``"3"`` is not a count, whatever a range check would say of it."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if annotation == "bool":
        if not (isinstance(value, bool) or (kind == "b" and getattr(value, "ndim", 1) == 0)):
            raise UsageError(f"{arg(name)} must be True or False, got {value!r}")
        return bool(value)
    if annotation in ("int", "int | None") and value is not None:
        if isinstance(value, bool) or kind == "b" or not hasattr(type(value), "__index__"):
            raise UsageError(f"{arg(name)} must be a whole number, got {value!r}")
        return operator.index(value)
    return value


# ---------------------------------------------------------------- parsing


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
               "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
               "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_memory(value: int | str) -> int:
    """'512MiB', '2GB', '1g' or a number of bytes → bytes (at least 1 MiB).

    >>> parse_memory("512MiB"), parse_memory(2**30)
    (536870912, 1073741824)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        unit = (match.group(2) or "").lower() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise UsageError(f"{arg('max_memory')}: cannot read {value!r}; use e.g. 512MiB or 2GB")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 2**20:
        raise UsageError(f"{arg('max_memory')}: {value} is below the minimum of 1MiB")
    return size


def parse_recall_at(value: tuple[int, ...] | str) -> tuple[int, ...]:
    """'1,5,10' or (1, 5, 10) → (1, 5, 10), sorted and distinct."""
    return parse_cut_offs(value, "recall_at")


def parse_cut_offs(value: tuple[int, ...] | str, name: str) -> tuple[int, ...]:
    """Cut-offs k of the argument ``name``: '1,5,10' or (1, 5, 10) → (1, 5, 10), sorted
    and distinct, each at least 1.

    >>> parse_cut_offs("10, 1,5,1", "at")
    (1, 5, 10)
    """
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        values = tuple(sorted({int(str(part).strip()) for part in parts if str(part).strip()}))
    except (TypeError, ValueError):
        raise UsageError(f"{arg(name)}: expected whole numbers like 1,5,10, got "
                         f"{value!r}") from None
    if not values or values[0] < 1:
        raise UsageError(f"{arg(name)}: every k must be at least 1, got {value!r}")
    return values


def parse_temperature(value: float | str) -> float | str:
    """A finite temperature > 0, or "auto".

    >>> parse_temperature("0.1"), parse_temperature(" Auto ")
    (0.1, 'auto')
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise UsageError(f"{arg('temperature')}: expected a number > 0 or auto, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{arg('temperature')}: expected a number > 0 or auto, got "
                         f"{value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise UsageError(f"{arg('temperature')} must be > 0, got {value}")
    return number


def _parse_floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{arg(name)}: expected numbers like 0.01,0.05,0.1, got {text!r}") \
            from None


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if str(value) not in choices:
        raise UsageError(f"{arg(name)}: unknown value {str(value)!r}; choose one of "
                         f"{', '.join(choices)}")


MAX_HUBNESS_K = 1000
"""The largest k of hubness: each query keeps its k best candidates."""


def _check_hubness_k(k: int, diagnostics: bool) -> None:
    if not (_whole(k, 1) and k <= MAX_HUBNESS_K):
        raise UsageError(f"{arg('hubness_k')} must be between 1 and {MAX_HUBNESS_K}, got {k}")
    if k != HUBNESS_K and not diagnostics:
        raise UsageError(f"{arg('hubness_k')} sets the hubness of {arg('diagnostics')}: add "
                         f"{arg('diagnostics')}")


MIN_BOOTSTRAP, MAX_BOOTSTRAP = 100, 100_000
"""Resamples of a bootstrap: fewer leave a 95% interval without tails to read."""


def _check_bootstrap(resamples: int) -> None:
    if not (_whole(resamples, MIN_BOOTSTRAP) and resamples <= MAX_BOOTSTRAP):
        raise UsageError(f"{arg('bootstrap')} must be between {MIN_BOOTSTRAP} and "
                         f"{MAX_BOOTSTRAP:,}, got {resamples}")


def _one_stdin(named: list[tuple[str, Any, str | None]]) -> None:
    """Refuse standard input (``-``) named for several inputs unless each takes its own
    column of it (one Parquet stream): it is read once, and is one input."""
    reading = [(name, column) for name, source, column in named
               if isinstance(source, str) and source == STDIN]
    columns = [column for _, column in reading]
    if len(reading) > 1 and (None in columns or len(set(columns)) < len(columns)):
        first, second = reading[0][0], reading[1][0]
        which = (f"{arg(first)} and {arg(second)} both" if first != second
                 else f"two {arg(first)} inputs")
        raise UsageError(f"{which} read standard input (-), which holds one input: save all "
                         "but one of them to files, or take a different column of one "
                         "Parquet stream for each")


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _one_of_both(a: str, a_value: Any, b: str, b_value: Any) -> None:
    if a_value is not None and b_value is not None:
        raise UsageError(f"give {arg(a)} or {arg(b)}, not both")


def is_path(source: Any) -> bool:
    """Whether an input names a file (a str or os.PathLike) rather than holding an array."""
    return isinstance(source, str | os.PathLike)
