"""Result objects: frozen dataclasses with ``to_dict()``. Standard library only.

They are computed once and rendered many ways (table, JSON, CSV) by render.py.
"""

from __future__ import annotations

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
        out.update(run)
        out["notes"] = list(self.notes)
        return out


_LN2 = 0.6931471805599453


@dataclass(frozen=True)
class SweepRow:
    """The loss at one grid temperature."""

    temperature: float
    loss_mean: float
    loss_std: float
    mi_lower_bound_nats: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SweepResult:
    """The result of ``infonce sweep-temperature``.

    ``optimum`` is {temperature, loss_mean, converged, gradient, passes}, or
    {temperature: None, reason, passes} when there is no finite optimum.
    """

    run: RunInfo
    rows: tuple[SweepRow, ...]
    best_grid: SweepRow
    optimum: dict[str, Any]
    retrieval: RetrievalMetrics
    num_candidates_min: int
    num_candidates_max: int

    def to_dict(self) -> dict[str, Any]:
        run = self.run.to_dict()
        out: dict[str, Any] = {
            "rows": [row.to_dict() for row in self.rows],
            "best_grid": {"temperature": self.best_grid.temperature,
                          "loss_mean": self.best_grid.loss_mean},
            "optimum": dict(self.optimum),
            **self.retrieval.to_dict(),
            "n": run.pop("n"),
            "num_candidates": {"min": self.num_candidates_min, "max": self.num_candidates_max},
            "similarity": run.pop("similarity"),
            "negatives": run.pop("negatives"),
        }
        out.update(run)
        return out
