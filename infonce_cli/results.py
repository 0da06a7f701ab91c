"""Result objects: frozen dataclasses with ``to_dict()``. Standard library only.

They are computed once and rendered many ways (table, JSON, CSV) by render.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LossStats:
    """Distribution of per-sample losses (nats). ``std`` is the population std (ddof = 0)."""

    mean: float
    std: float
    median: float
    min: float
    max: float
    p05: float
    p95: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Rank-based metrics of the positive among its candidates; they do not depend on τ."""

    accuracy_at_1: float
    recall_at: dict[int, float]
    mrr: float
    ndcg_at_10: float
    mean_rank: float
    median_rank: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_at_1": self.accuracy_at_1,
            "recall_at": {str(k): v for k, v in sorted(self.recall_at.items())},
            "mrr": self.mrr,
            "ndcg_at_10": self.ndcg_at_10,
            "mean_rank": self.mean_rank,
            "median_rank": self.median_rank,
        }


@dataclass(frozen=True)
class RunInfo:
    """How a result was computed: the options that shape the numbers, and the cost."""

    n: int
    similarity: str
    negatives: str
    device: str
    dtype: str
    seconds: float
    batch_size: int | None = None
    symmetric: bool = False
    rank: int = 0
    """This process's rank in a distributed run (0 alone); not part of the output."""
    world: int = 1

    @property
    def leader(self) -> bool:
        """Whether this process reports the result (rank 0)."""
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "similarity": self.similarity,
            "negatives": self.negatives,
            "device": self.device,
            "dtype": self.dtype,
            "seconds": self.seconds,
        }
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.symmetric:
            out["symmetric"] = True
        return out


@dataclass(frozen=True)
class WorstCase:
    """One of the pairs with the highest loss, and its hardest negative."""

    index: int
    id: Any
    loss: float
    positive_score: float
    hardest_negative_index: int
    hardest_negative_id: Any
    hardest_negative_score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PerQuery:
    """Metrics per query when several rows (positives) share one: accuracy@1 and MRR of
    each query's best positive, recall@k over all of its positives; ``loss_mean`` is the
    mean of each query's mean loss (SupCon only)."""

    queries: int
    accuracy_at_1: float
    mrr: float
    recall_at: dict[int, float]
    loss_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queries": self.queries,
            "accuracy_at_1": self.accuracy_at_1,
            "mrr": self.mrr,
            "recall_at": {str(k): v for k, v in sorted(self.recall_at.items())},
        }
        if self.loss_mean is not None:
            out["loss_mean"] = self.loss_mean
        return out


@dataclass(frozen=True)
class SidePair:
    """One diagnostic of each side: the queries and the positives (or the corpus)."""

    query: float
    pos: float
    pos_name: str = "pos"
    """What the second side is: the positives, or a retrieval run's corpus."""

    def to_dict(self) -> dict[str, float]:
        return {"query": self.query, self.pos_name: self.pos}


@dataclass(frozen=True)
class Hubness:
    """The k-occurrence of the candidates the queries share: how often each is among the
    k best-scoring candidates of a query."""

    k: int
    skewness: float
    antihub_share: float
    """The share of candidates never among any query's k best."""
    max_occurrence: int
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CalibrationBin:
    """Queries whose largest softmax probability lies in [low, high)."""

    low: float
    high: float
    count: int
    confidence: float | None
    """Their mean largest probability (None when the bin is empty)."""
    accuracy: float | None
    """The share of them whose positive is top-1 (None when the bin is empty)."""

    def to_dict(self) -> dict[str, Any]:
        """An empty bin has no confidence or accuracy: they are left out, not null."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Calibration:
    """How far the softmax's top-1 probability is from the top-1 accuracy."""

    ece: float
    mce: float
    bins: tuple[CalibrationBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ece": self.ece, "mce": self.mce, "bins": [b.to_dict() for b in self.bins]}


@dataclass(frozen=True)
class Diagnostics:
    """The geometry of the embedding space and the calibration of the softmax."""

    alignment: float
    uniformity: SidePair
    effective_rank: SidePair
    anisotropy: SidePair
    hubness: Hubness | None
    """None where no two queries share a candidate (paired negatives)."""
    calibration: Calibration

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alignment": self.alignment,
            "uniformity": self.uniformity.to_dict(),
            "effective_rank": self.effective_rank.to_dict(),
            "anisotropy": self.anisotropy.to_dict(),
        }
        if self.hubness is not None:
            out["hubness"] = self.hubness.to_dict()
        out["calibration"] = self.calibration.to_dict()
        return out


PerSampleColumns = Mapping[str, Any]
"""Per-sample columns (name → a NumPy array of one value per pair), in output order."""


@dataclass(frozen=True)
class ScoreResult:
    """The aggregate of ``infonce score``."""

    run: RunInfo
    temperature: float
    num_candidates_min: int
    num_candidates_max: int
    loss: LossStats
    retrieval: RetrievalMetrics
    mi_lower_bound_nats: float
    mi_ceiling_nats: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    temperature_fitted: bool = False
    masked: int | None = None
    """False negatives dropped from the candidate sets, when masking was asked for."""
    skipped: int = 0
    """Queries left out of the aggregates because masking left them no negative."""
    intervals: dict[str, tuple[float, float]] | None = None
    """Bootstrap 95% intervals of loss_mean, accuracy_at_1 and mrr (``--ci``)."""
    resamples: int = 0
    worst: tuple[WorstCase, ...] | None = None
    per_query: PerQuery | None = None
    """Metrics per query when several rows share one (``query_ids``)."""
    multi_positive: str | None = None
    diagnostics: Diagnostics | None = None
    per_sample: PerSampleColumns | None = field(default=None, compare=False, repr=False)
    """This process's per-sample rows (all of them, unless distributed); not in to_dict()."""

    @property
    def mi_lower_bound_bits(self) -> float:
        return self.mi_lower_bound_nats / _LN2

    def to_dict(self) -> dict[str, Any]:
        run = self.run.to_dict()
        out: dict[str, Any] = {
            "n": run.pop("n"),
            "num_candidates": {"min": self.num_candidates_min, "max": self.num_candidates_max},
            "temperature": self.temperature,
            "similarity": run.pop("similarity"),
            "negatives": run.pop("negatives"),
            "loss": self.loss.to_dict(),
            **self.retrieval.to_dict(),
            "mi_lower_bound_nats": self.mi_lower_bound_nats,
            "mi_lower_bound_bits": self.mi_lower_bound_bits,
            "mi_ceiling_nats": self.mi_ceiling_nats,
        }
        if self.temperature_fitted:
            out["temperature_fitted"] = True
        if self.masked is not None:
            out["masked"] = self.masked
            out["skipped"] = self.skipped
        if self.intervals is not None:
            out["ci"] = {"level": 0.95, "resamples": self.resamples,
                         **{k: {"low": lo, "high": hi} for k, (lo, hi) in self.intervals.items()}}
        if self.worst is not None:
            out["worst"] = [case.to_dict() for case in self.worst]
        if self.per_query is not None:
            out["multi_positive"] = self.multi_positive
            out["per_query"] = self.per_query.to_dict()
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict()
        out.update(run)
        out["notes"] = [str(note) for note in self.notes]
        return out


_LN2 = 0.6931471805599453


@dataclass(frozen=True)
class Optimum:
    """The loss-minimising temperature, or why there is none."""

    temperature: float | None
    loss_mean: float | None
    converged: bool
    reason: str | None = None
    gradient: float | None = None
    """d(mean loss)/ds at the optimum: ≈ 0 (the first-order condition)."""
    passes: int = 0
    """Extra passes over the scores the fit took after the grid."""

    def to_dict(self) -> dict[str, object]:
        if self.temperature is None:
            return {"temperature": None, "reason": self.reason, "passes": self.passes}
        return {"temperature": self.temperature, "loss_mean": self.loss_mean,
                "converged": self.converged, "gradient": self.gradient, "passes": self.passes}


@dataclass(frozen=True)
class SweepRow:
    """The loss at one grid temperature."""

    temperature: float
    loss_mean: float
    loss_std: float
    mi_lower_bound_nats: float
    ece: float | None = None
    """The expected calibration error of the softmax there (not for symmetric losses)."""

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SweepResult:
    """The result of a temperature sweep: the grid, its best point and the exact optimum."""

    run: RunInfo
    rows: tuple[SweepRow, ...]
    best_grid: SweepRow
    optimum: Optimum
    retrieval: RetrievalMetrics
    num_candidates_min: int
    num_candidates_max: int
    masked: int | None = None
    skipped: int = 0
    multi_positive: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    per_sample: PerSampleColumns | None = field(default=None, compare=False, repr=False)
    """Per-sample rows at ``per_sample_temperature`` (asked for); not in to_dict()."""
    per_sample_temperature: float | None = None

    @property
    def calibration_optimum(self) -> SweepRow | None:
        """The grid point with the smallest expected calibration error (None when the ECE
        is not reported)."""
        rated = [row for row in self.rows if row.ece is not None]
        return min(rated, key=lambda row: row.ece or 0.0) if rated else None

    def to_dict(self) -> dict[str, Any]:
        run = self.run.to_dict()
        out: dict[str, Any] = {
            "rows": [row.to_dict() for row in self.rows],
            "best_grid": {"temperature": self.best_grid.temperature,
                          "loss_mean": self.best_grid.loss_mean},
            "optimum": self.optimum.to_dict(),
            **self.retrieval.to_dict(),
            "n": run.pop("n"),
            "num_candidates": {"min": self.num_candidates_min, "max": self.num_candidates_max},
            "similarity": run.pop("similarity"),
            "negatives": run.pop("negatives"),
        }
        if self.masked is not None:
            out["masked"] = self.masked
            out["skipped"] = self.skipped
        if self.multi_positive is not None:
            out["multi_positive"] = self.multi_positive
        if self.per_sample_temperature is not None:
            out["per_sample_temperature"] = self.per_sample_temperature
        calibrated = self.calibration_optimum
        if calibrated is not None:
            out["calibration_optimum"] = {"temperature": calibrated.temperature,
                                          "ece": calibrated.ece}
        out.update(run)
        out["notes"] = [str(note) for note in self.notes]
        return out


@dataclass(frozen=True)
class ReportResult:
    """What ``infonce report`` shows: a score with its diagnostics and per-sample rows, and
    a temperature sweep of the same inputs."""

    score: ScoreResult
    sweep: SweepResult
    inputs: dict[str, str]
    """Each input role (query, pos, neg) and what was given for it."""

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "score": self.score.to_dict(),
                "sweep": self.sweep.to_dict()}


@dataclass(frozen=True)
class Difference:
    """B − A for one metric, with a paired-bootstrap interval and a paired test's p-value."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CompareResult:
    """The result of ``infonce compare``: metrics of A and B on the same pairs, and B − A."""

    n: int
    a: dict[str, float]
    b: dict[str, float]
    difference: dict[str, Difference]
    resamples: int
    seed: int
    run_a: RunInfo
    run_b: RunInfo
    temperature_a: float
    temperature_b: float
    temperature_fitted: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    lower_is_better: tuple[str, ...] = ("loss_mean",)

    def worse(self, metric: str) -> bool:
        """Whether B is significantly worse than A on a metric (its 95% interval excludes 0)."""
        diff = self.difference[metric]
        return diff.ci_low > 0 if metric in self.lower_is_better else diff.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "a": {k: {"value": v} for k, v in self.a.items()},
            "b": {k: {"value": v} for k, v in self.b.items()},
            "difference": {k: d.to_dict() for k, d in self.difference.items()},
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": 0.95,
                          "test": "paired sign-flip permutation"},
            "temperature": {"a": self.temperature_a, "b": self.temperature_b},
            **({"temperature_fitted": True} if self.temperature_fitted else {}),
            "similarity": self.run_a.similarity,
            "negatives": {"a": self.run_a.negatives, "b": self.run_b.negatives},
            **{k: v for k, v in self.run_a.to_dict().items()
               if k in ("batch_size", "symmetric")},
            "device": self.run_a.device,
            "dtype": self.run_a.dtype,
            "seconds": self.run_a.seconds + self.run_b.seconds,
            "notes": [str(note) for note in self.notes],
        }


@dataclass(frozen=True)
class GradedMetrics:
    """Graded retrieval metrics (trec_eval/ranx definitions) averaged over the queries that
    have at least one relevant document; cut-off metrics are keyed by k.

    ``gain`` names the nDCG gain: ``linear`` (rel, ranx ``ndcg``, trec_eval ``ndcg_cut``)
    or ``exponential`` (2^rel − 1, ranx ``ndcg_burges``).
    """

    queries: int
    gain: str
    ndcg_at: dict[int, float]
    recall_at: dict[int, float]
    precision_at: dict[int, float]
    mrr_at: dict[int, float]
    mrr: float
    map: float
    map_at: dict[int, float]
    r_precision: float
    hit_rate_at: dict[int, float]
    per_query: PerSampleColumns = field(default_factory=dict, compare=False, repr=False)
    """One value per query (name → a NumPy array, query order), named as ranx names its
    metrics: ``ndcg@10``, ``map``, ``r_precision``…; not in to_dict()."""

    def to_dict(self) -> dict[str, Any]:
        def by_k(values: dict[int, float]) -> dict[str, float]:
            return {str(k): v for k, v in sorted(values.items())}

        return {
            "queries": self.queries,
            "gain": self.gain,
            "ndcg_at": by_k(self.ndcg_at),
            "recall_at": by_k(self.recall_at),
            "precision_at": by_k(self.precision_at),
            "mrr_at": by_k(self.mrr_at),
            "mrr": self.mrr,
            "map": self.map,
            "map_at": by_k(self.map_at),
            "r_precision": self.r_precision,
            "hit_rate_at": by_k(self.hit_rate_at),
        }


@dataclass(frozen=True)
class RetrievalResult:
    """The result of ``infonce retrieval``: graded metrics over the queries with a relevant
    document, and the InfoNCE loss over the whole corpus with the relevant documents
    (relevance ≥ ``min_relevance``) as positives."""

    run: RunInfo
    temperature: float
    metrics: GradedMetrics
    loss: LossStats
    mi_lower_bound_nats: float
    mi_ceiling_nats: float
    corpus: int
    judgements: int
    relevant: int
    """Relevant (query, document) pairs evaluated."""
    without_relevant: int
    unknown: int
    min_relevance: int
    multi_positive: str
    temperature_fitted: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    diagnostics: Diagnostics | None = None
    per_query: PerSampleColumns | None = field(default=None, compare=False, repr=False)
    """Per query: its id and every metric (query order); not in to_dict()."""
    top: PerSampleColumns | None = field(default=None, compare=False, repr=False)
    """With a run: ``query_id``, ``doc_ids`` (Q, k) and ``scores`` (Q, k); not in to_dict()."""

    @property
    def mi_lower_bound_bits(self) -> float:
        return self.mi_lower_bound_nats / _LN2

    def to_dict(self) -> dict[str, Any]:
        run = self.run.to_dict()
        metrics = self.metrics.to_dict()
        out: dict[str, Any] = {
            "queries": metrics.pop("queries"),
            "queries_without_relevant": self.without_relevant,
            "corpus": self.corpus,
            "judgements": self.judgements,
            "relevant": self.relevant,
            "unknown_ids": self.unknown,
            **metrics,
            "temperature": self.temperature,
            "loss": self.loss.to_dict(),
            "mi_lower_bound_nats": self.mi_lower_bound_nats,
            "mi_lower_bound_bits": self.mi_lower_bound_bits,
            "mi_ceiling_nats": self.mi_ceiling_nats,
            "min_relevance": self.min_relevance,
            "multi_positive": self.multi_positive,
            "similarity": run["similarity"],
            "device": run["device"],
            "dtype": run["dtype"],
            "seconds": run["seconds"],
        }
        if self.temperature_fitted:
            out["temperature_fitted"] = True
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict()
        out["notes"] = [str(note) for note in self.notes]
        return out


@dataclass(frozen=True)
class ModelComparison:
    """Several models on the same queries and qrels, each against the baseline (the first):
    per metric, every model's mean, and each difference with its paired-bootstrap 95%
    interval, permutation p-value and p-value adjusted over the models."""

    queries: int
    names: tuple[str, ...]
    values: dict[str, dict[str, float]]
    """model → metric → mean over the queries."""
    difference: dict[str, dict[str, Difference]]
    """model (not the baseline) → metric → model − baseline."""
    adjusted: dict[str, dict[str, float]]
    """model → metric → p-value adjusted over the models' comparisons of that metric."""
    correction: str
    resamples: int
    seed: int
    runs: tuple[RetrievalResult, ...] = field(compare=False, repr=False)
    lower_is_better: tuple[str, ...] = ("loss_mean",)

    def worse(self, model: str, metric: str, level: float = 0.05) -> bool:
        """Whether a model is significantly worse than the baseline on a metric (its
        adjusted p-value below ``level``, the difference on the worse side)."""
        diff = self.difference[model][metric]
        wrong_way = diff.value > 0 if metric in self.lower_is_better else diff.value < 0
        return wrong_way and self.adjusted[model][metric] < level

    def to_dict(self) -> dict[str, Any]:
        first = self.runs[0]
        return {
            "queries": self.queries,
            "baseline": self.names[0],
            "models": {name: {metric: {"value": value} for metric, value in metrics.items()}
                       for name, metrics in self.values.items()},
            "difference": {
                name: {metric: {**diff.to_dict(), "p_adjusted": self.adjusted[name][metric]}
                       for metric, diff in metrics.items()}
                for name, metrics in self.difference.items()},
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": 0.95,
                          "test": "paired sign-flip permutation",
                          "correction": self.correction},
            "temperature": {name: run.temperature
                            for name, run in zip(self.names, self.runs, strict=True)},
            "similarity": first.run.similarity,
            "device": first.run.device,
            "dtype": first.run.dtype,
            "seconds": sum(run.run.seconds for run in self.runs),
        }
