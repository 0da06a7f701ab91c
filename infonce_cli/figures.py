"""What the pictures show, as data: panels of bars, lines and points. NumPy only.

A panel says what is drawn and on which axes; the drawing is done elsewhere (``svg``
writes SVG itself, ``plots`` draws PNG with matplotlib and the terminal's text bars),
so every backend draws the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import calibration, top_probability
from .results import Calibration, ScoreResult, SweepResult

Array = np.ndarray[Any, Any]

LOSS_BINS = 40
SIMILARITY_BINS = 40


@dataclass(frozen=True)
class Bars:
    """A histogram: bar b spans [edges[b], edges[b + 1]) and is ``heights[b]`` high."""

    label: str
    edges: tuple[float, ...]
    heights: tuple[float, ...]


@dataclass(frozen=True)
class Line:
    """A polyline through the points (x, y); ``dashed`` for a reference line."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    dashed: bool = False


@dataclass(frozen=True)
class Points:
    """Marked points (x, y), such as an optimum."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


Series = Bars | Line | Points


@dataclass(frozen=True)
class Panel:
    """One chart: its series drawn in order on shared axes (log-scaled when asked)."""

    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    log_x: bool = False
    log_y: bool = False


def _histogram(values: Array, edges: Array, label: str) -> Bars:
    counts, _ = np.histogram(values, bins=edges)
    return Bars(label, tuple(float(e) for e in edges), tuple(float(c) for c in counts))


def _even_edges(values: Array, bins: int) -> Array:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def loss_histogram(loss: Array) -> Panel:
    """The per-sample losses in equal-width bins."""
    loss = np.asarray(loss, dtype=np.float64)
    return Panel("per-sample loss", "loss (nats)", "pairs",
                 (_histogram(loss, _even_edges(loss, LOSS_BINS), "pairs"),))


def rank_distribution(rank: Array) -> Panel:
    """The positive's rank in bins that double in width (1, 2–3, 4–7, …), on log axes."""
    rank = np.asarray(rank, dtype=np.int64)
    top = max(1, math.ceil(math.log2(int(rank.max()) + 1)))
    edges = 2.0 ** np.arange(top + 1)
    return Panel("rank of the positive", "rank (log scale)", "pairs",
                 (_histogram(rank, edges, "pairs"),), log_x=True)


def reliability_diagram(calibration: Calibration) -> Panel:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration."""
    edges = (*(b.low for b in calibration.bins), calibration.bins[-1].high)
    filled = [b for b in calibration.bins if b.count]
    return Panel(
        f"reliability (ECE {calibration.ece:.4f})", "confidence (top-1 softmax probability)",
        "top-1 accuracy",
        (Bars("accuracy", edges, tuple(b.accuracy or 0.0 for b in calibration.bins)),
         Line("perfect calibration", (0.0, 1.0), (0.0, 1.0), dashed=True),
         Points("mean confidence", tuple(b.confidence or 0.0 for b in filled),
                tuple(b.accuracy or 0.0 for b in filled))))


def similarity_distributions(positive_score: Array, hardest_score: Array) -> Panel:
    """The positives' scores against the hardest negatives', on the same bins."""
    positive = np.asarray(positive_score, dtype=np.float64)
    hardest = np.asarray(hardest_score, dtype=np.float64)
    hardest = hardest[np.isfinite(hardest)]
    edges = _even_edges(np.concatenate([positive, hardest]), SIMILARITY_BINS)
    series: tuple[Series, ...] = (_histogram(positive, edges, "positive"),)
    if len(hardest):
        series = (*series, _histogram(hardest, edges, "hardest negative"))
    return Panel("similarity: positives and hardest negatives", "score", "pairs", series)


def sweep_curve(result: SweepResult) -> Panel:
    """Mean loss against τ on a log axis, the optimum marked."""
    rows = result.rows
    series: tuple[Series, ...] = (Line("mean loss", tuple(r.temperature for r in rows),
                                       tuple(r.loss_mean for r in rows)),)
    optimum = result.optimum
    if optimum.temperature is not None and optimum.loss_mean is not None:
        series = (*series, Points(f"optimum τ = {optimum.temperature:.4g}",
                                  (optimum.temperature,), (optimum.loss_mean,)))
    return Panel("mean loss against temperature", "temperature τ (log scale)",
                 "mean InfoNCE loss (nats)", series, log_x=True)


def score_panels(result: ScoreResult) -> tuple[Panel, ...]:
    """The figure of a score run: losses, ranks, reliability and the similarity of
    positives and hardest negatives. The reliability diagram is the diagnostics' when
    there are some, else it is computed from the per-sample rows; a symmetric loss, which
    averages two softmaxes, has none."""
    columns = result.per_sample
    assert columns is not None
    panels = [loss_histogram(columns["loss"]), rank_distribution(columns["rank"])]
    if result.diagnostics is not None:
        panels.append(reliability_diagram(result.diagnostics.calibration))
    elif not result.run.symmetric:
        confidence = top_probability(columns["loss"], columns["positive_score"],
                                     columns["hardest_negative_score"],
                                     1.0 / result.temperature, result.run.dtype)
        panels.append(reliability_diagram(calibration(confidence, columns["rank"] == 1)))
    panels.append(similarity_distributions(columns["positive_score"],
                                           columns["hardest_negative_score"]))
    return tuple(panels)
