"""Temperature sweeps: the loss at every grid temperature from one similarity pass, and the
exact loss-minimising temperature.

With s = 1/τ, the mean loss is convex in s: its derivative is the mean over
queries of E_softmax[x] − x_pos and its second derivative the mean softmax
variance of the similarities, which is ≥ 0. So the optimum is found by
bracketing on the grid (extending past its edges by doubling or halving s) and
shrinking the bracket with steps on Hermite interpolants of the slope, each pass
evaluating the derivatives at a few points at once. When the scores fit the
memory budget they are computed once and kept, so later passes only redo the
exponentials; when they do not, a pilot on the first queries places probes that
the grid pass evaluates too, which usually pins the optimum with no further pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .engine import (
    CachedPass,
    CandidateIds,
    EngineOptions,
    PerSampleScores,
    Rows,
    SimilarityPass,
    fold_passes,
    similarity_passes,
)
from .errors import InfonceError, UsageError
from .results import Optimum

Summer = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over the ranks of a distributed run."""

DEFAULT_GRID = (0.01, 1.0, 50)
RELATIVE_PRECISION = 1e-6
"""The fitted τ is within this relative distance of the true optimum when converged."""
MAX_REFINE_PASSES = 12
_EXTEND_STEPS = 8
"""Doublings (or halvings) of s tried per pass when the optimum lies beyond the grid."""
_SCORE_BYTES = 4

NO_OPTIMUM_COLD = ("every positive scores at or above all of its negatives, so the loss "
                   "keeps falling as τ → 0: there is no finite optimum")
NO_OPTIMUM_HOT = ("the positives score at or below their average candidate, so the loss "
                  "keeps falling as τ → ∞: there is no finite optimum")


def temperature_grid(
    minimum: float, maximum: float, steps: int, spacing: str = "log"
) -> tuple[float, ...]:
    """Grid temperatures from ``minimum`` to ``maximum`` inclusive.

    >>> temperature_grid(0.01, 1.0, 3)
    (0.01, 0.1, 1.0)
    >>> temperature_grid(0.1, 0.3, 3, "linear")
    (0.1, 0.2, 0.3)
    """
    if not (minimum > 0 and math.isfinite(minimum) and math.isfinite(maximum)):
        raise UsageError(f"--min must be a finite number > 0, got {minimum:g}")
    if not minimum < maximum:
        raise UsageError(f"--min ({minimum:g}) must be below --max ({maximum:g})")
    if steps < 2:
        raise UsageError(f"--steps must be at least 2, got {steps}")
    if spacing == "log":
        values = np.geomspace(minimum, maximum, steps)
    elif spacing == "linear":
        values = np.linspace(minimum, maximum, steps)
    else:
        raise UsageError(f"--spacing must be log or linear, got {spacing!r}")
    values[0], values[-1] = minimum, maximum
    return tuple(round(float(v), 12) for v in values)


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
    """Sorted, distinct temperatures, each finite and > 0."""
    if not temperatures:
        raise UsageError("--temperatures: give at least one temperature")
    for t in temperatures:
        if not (t > 0 and math.isfinite(t)):
            raise UsageError(f"--temperatures: every temperature must be > 0, got {t:g}")
    return tuple(sorted(set(temperatures)))


@dataclass(frozen=True)
class SweepScores:
    """Per-sample scores over the grid, and the fitted optimum."""

    grid: PerSampleScores
    temperatures: tuple[float, ...]
    optimum: Optimum


def prepare_passes(
    query: Rows, positive: Rows, negatives: Rows | None, options: EngineOptions,
    ids: CandidateIds | None = None,
) -> list[SimilarityPass | CachedPass]:
    """Similarity passes, kept in memory when all their scores fit the memory budget."""
    passes = similarity_passes(query, positive, negatives, options, ids)
    if sum(p.num_scores for p in passes) * _SCORE_BYTES <= options.max_memory:
        return [p.cached() for p in passes]
    return list(passes)


def sweep_embeddings(
    query: Rows,
    positive: Rows,
    negatives: Rows | None,
    temperatures: Sequence[float],
    options: EngineOptions | None = None,
    on_rows_done: Callable[[int], None] | None = None,
    summer: Summer | None = None,
    ids: CandidateIds | None = None,
) -> SweepScores:
    """Losses at every temperature from one similarity pass, and the exact optimum.

    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(64, 8)).astype("float32")
    >>> out = sweep_embeddings(q, q + rng.normal(size=(64, 8)).astype("float32"), None,
    ...                        (0.1, 0.5, 1.0))
    >>> out.grid.loss.shape, out.optimum.converged
    (torch.Size([64, 3]), True)
    """
    options = options or EngineOptions()
    passes = prepare_passes(query, positive, negatives, options, ids)
    return sweep_passes(passes, check_temperatures(temperatures), on_rows_done, summer)


def score_at_optimum(
    query: Rows,
    positive: Rows,
    negatives: Rows | None,
    options: EngineOptions | None = None,
    on_rows_done: Callable[[int], None] | None = None,
    ids: CandidateIds | None = None,
    summer: Summer | None = None,
) -> tuple[float, PerSampleScores]:
    """Fit the loss-minimising temperature (from the default grid), and score at it.

    Raises ``InfonceError`` when there is no finite optimum.
    """
    options = options or EngineOptions()
    passes = prepare_passes(query, positive, negatives, options, ids)
    optimum = sweep_passes(passes, temperature_grid(*DEFAULT_GRID), on_rows_done, summer).optimum
    if optimum.temperature is None:
        raise InfonceError(f"--temperature auto: {optimum.reason}; give a temperature instead")
    return optimum.temperature, fold_passes(passes, [optimum.temperature])


def sweep_passes(
    passes: Sequence[SimilarityPass | CachedPass],
    temperatures: tuple[float, ...],
    on_rows_done: Callable[[int], None] | None,
    summer: Summer | None,
) -> SweepScores:
    """The grid pass over prepared passes, then the fit. When the scores are recomputed at every step, a pilot
    on the first queries runs first, and the grid pass also probes around its optimum:
    the fit then usually needs one more pass over the scores."""
    probes = _pilot_probes(passes, temperatures) if summer is None else []
    folded = fold_passes(passes, temperatures, [1.0 / s for s in probes], on_rows_done)
    grid = replace(folded, loss=folded.loss[:, :len(temperatures)], softmax_gap=None,
                   softmax_variance=None, mean_candidate_gap=None)
    means = _Means(summer)
    known = _points(folded, probes, means, len(temperatures)) if probes else None
    optimum = fit_temperature(passes, temperatures, grid.loss.detach(), grid.positive_unbeaten,
                              summer, known)
    return SweepScores(grid, temperatures, optimum)


def _pilot_probes(
    passes: Sequence[SimilarityPass | CachedPass], temperatures: Sequence[float]
) -> list[float]:
    """Scales s clustered around the optimum of the first queries, when that is worth it."""
    if isinstance(passes[0], CachedPass) or passes[0].rows < 4 * _PILOT_ROWS:
        return []
    grid = (*temperatures[:-1:max(1, len(temperatures) // _PILOT_GRID)], temperatures[-1])
    pilot_grid = fold_passes(passes, grid, first_rows=_PILOT_ROWS)
    pilot = fit_temperature(passes, grid, pilot_grid.loss.detach(),
                            pilot_grid.positive_unbeaten, first_rows=_PILOT_ROWS,
                            precision=_PILOT_PRECISION)
    if pilot.temperature is None:
        return []
    return [1.0 / pilot.temperature * (1 + d) for d in _PILOT_CLUSTER]


@dataclass(frozen=True)
class _Point:
    scale: float  # s = 1/τ
    loss: float
    slope: float  # d loss / ds
    curvature: float  # d² loss / ds²


def fit_temperature(
    passes: Sequence[SimilarityPass | CachedPass],
    temperatures: Sequence[float],
    grid_loss: torch.Tensor,
    positive_unbeaten: torch.Tensor,
    summer: Summer | None = None,
    known: tuple[list[_Point], float] | None = None,
    first_rows: int | None = None,
    precision: float = RELATIVE_PRECISION,
) -> Optimum:
    """The exact minimiser of the mean loss over all τ > 0, from the grid's per-sample losses
    (N, T).

    Each step folds the scores at a handful of probe temperatures with their softmax
    moments; ``known`` holds points already evaluated (and the slope at s = 0). In a
    distributed run (``summer`` given) every mean is taken over all ranks' queries;
    ``first_rows`` restricts the fit to the first queries (a pilot), which may settle for
    a looser relative ``precision``.
    """
    means = _Means(summer)
    if bool(means.count(~positive_unbeaten) == 0):
        return Optimum(None, None, False, NO_OPTIMUM_COLD)

    def evaluate(probes: list[float]) -> tuple[list[_Point], float]:
        result = fold_passes(passes, [], [1.0 / s for s in probes], first_rows=first_rows)
        return _points(result, probes, means, 0)

    return _search(evaluate, temperatures, means.mean(grid_loss), known, precision)


def _points(
    result: PerSampleScores, probes: Sequence[float], means: _Means, first_probe: int
) -> tuple[list[_Point], float]:
    """Mean loss, slope and curvature at each probe, and the mean slope at s = 0."""
    assert result.softmax_gap is not None
    assert result.softmax_variance is not None
    assert result.mean_candidate_gap is not None
    loss = means.mean(result.loss.detach()[:, first_probe:])
    slope, curvature = (means.mean(t.detach()) for t in (result.softmax_gap,
                                                          result.softmax_variance))
    points = [_Point(*values) for values in zip(probes, loss, slope, curvature, strict=True)]
    return points, means.mean(result.mean_candidate_gap.detach()[:, None])[0]


class _Means:
    """Column means over the queries of this process, or of every rank with a summer."""

    def __init__(self, summer: Summer | None) -> None:
        self.summer = summer

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.summer is None else self.summer(tensor)

    def mean(self, values: torch.Tensor) -> list[float]:
        """(N, T) → T means, in float64."""
        sums = self._sum(values.double().sum(dim=0).cpu())
        count = self._sum(torch.tensor([values.shape[0]], dtype=torch.float64))
        return (sums / count).tolist()

    def count(self, flags: torch.Tensor) -> int:
        return int(self._sum(flags.long().sum().reshape(1).cpu()).item())


_PILOT_ROWS = 1024
_PILOT_GRID = 16
"""About this many grid temperatures bracket the pilot's optimum."""
_PILOT_PRECISION = 1e-2
_PILOT_CLUSTER = (-0.15, -0.05, 0.0, 0.05, 0.15)
"""Relative offsets in s of the probes around the pilot's optimum."""


def _search(
    evaluate: Callable[[list[float]], tuple[list[_Point], float]],
    temperatures: Sequence[float],
    grid_loss: Sequence[float],
    known_already: tuple[list[_Point], float] | None = None,
    precision: float = RELATIVE_PRECISION,
) -> Optimum:
    """Bracket the root of the slope in s and shrink the bracket to ``precision`` (relative).

    The root is settled by an evaluated point whose Newton step is below the precision, by
    a bracket that narrow, or, between probes, by interpolation: the slope and curvature
    known at the probes around the bracket define Hermite interpolants of the slope, and
    when the roots of two of them, one a point richer than the other, agree to a tenth of
    the precision, the richer one's root is taken without another pass.
    """
    scales = [1.0 / t for t in temperatures]
    best = int(np.argmin(grid_loss))
    # The grid is sorted by τ, so its scales run downwards.
    lower = scales[best + 1] if best + 1 < len(scales) else None  # smaller s, larger τ
    upper = scales[best - 1] if best > 0 else None  # larger s, smaller τ
    estimate = _parabola_vertex(scales, grid_loss, best)
    known: list[_Point] = []
    for passes_done in range(0 if known_already else 1, MAX_REFINE_PASSES + 1):
        if passes_done == 0 and known_already:
            points, slope_at_zero = known_already
        else:
            seen = {p.scale for p in known}
            probes = _next_probes(lower, upper, estimate, known, scales)
            probes = sorted({*probes, *(b for b in (lower, upper)
                                        if b is not None and b not in seen)})
            points, slope_at_zero = evaluate(probes)
        if slope_at_zero >= 0:
            return Optimum(None, None, False, NO_OPTIMUM_HOT, passes=passes_done)
        known.extend(points)
        known.sort(key=lambda p: p.scale)
        # A point whose Newton step is below the precision is the optimum (this also
        # covers a slope of exactly zero).
        settled = [p for p in points if p.curvature > 0
                   and abs(p.slope) <= precision / 2 * p.scale * p.curvature]
        if settled:
            return _optimum(min(settled, key=lambda p: abs(p.slope)), True, passes_done)
        below = [p.scale for p in known if p.slope < 0]
        above = [p.scale for p in known if p.slope > 0]
        if below and (lower is None or below[-1] > lower):
            lower = below[-1]
        if above and (upper is None or above[0] < upper):
            upper = above[0]
        if lower is None or upper is None or not {lower, upper} <= {p.scale for p in known}:
            continue
        left = next(p for p in known if p.scale == lower)
        right = next(p for p in known if p.scale == upper)
        if (upper - lower) <= precision * lower:
            return _optimum(min((left, right), key=lambda p: abs(p.slope)), True, passes_done)
        estimate, spread, used = _interpolated_root(left, right, known)
        if spread <= precision / 10 * estimate:
            return _interpolated_optimum(estimate, used, passes_done)
    closest = min(known, key=lambda p: abs(p.slope))
    return _optimum(closest, False, MAX_REFINE_PASSES)


def _next_probes(
    lower: float | None, upper: float | None, estimate: float | None, known: list[_Point],
    scales: list[float],
) -> list[float]:
    """Beyond the grid's edge while the optimum is not bracketed, inside the bracket after."""
    if lower is None:
        smallest = min([p.scale for p in known] + scales)
        return [smallest / 2**j for j in range(1, _EXTEND_STEPS + 1)]
    if upper is None:
        largest = max([p.scale for p in known] + scales)
        return [largest * 2**j for j in range(1, _EXTEND_STEPS + 1)]
    return _refinement_probes(lower, upper, estimate)


def _optimum(point: _Point, converged: bool, passes: int) -> Optimum:
    return Optimum(1.0 / point.scale, point.loss, converged, gradient=point.slope, passes=passes)


def _refinement_probes(lower: float, upper: float, estimate: float | None) -> list[float]:
    """Points inside (lower, upper). A wide bracket is cut in three around the estimate; a
    narrow one gets a ladder of steps of the required precision either side of the
    estimate, which closes the bracket in one pass when the estimate is that close."""
    if estimate is None or not lower < estimate < upper:
        estimate = math.sqrt(lower * upper)
    if (upper - lower) / estimate > 1e-3:
        probes = [lower + (upper - lower) * f for f in (1 / 3, 2 / 3)]
        probes += [estimate * (1 + d * RELATIVE_PRECISION) for d in (-4, 0, 4)]
    else:
        probes = [estimate * (1 + d * RELATIVE_PRECISION) for d in (-12, -4, -1, 0, 1, 4, 12)]
    return sorted(p for p in set(probes) if lower < p < upper)


def _parabola_vertex(scales: Sequence[float], loss: Sequence[float], best: int) -> float | None:
    if not 0 < best < len(scales) - 1:
        return None
    x = np.array(scales[best - 1:best + 2])
    y = np.array(loss[best - 1:best + 2])
    a, b, _ = np.polyfit(x, y, 2)
    return float(-b / (2 * a)) if a > 0 else None


def _interpolated_root(
    left: _Point, right: _Point, known: list[_Point]
) -> tuple[float, float, list[_Point]]:
    """The root of the slope inside the bracket (left, right), how far it moves when the
    farthest of the points used is left out (inf when there is no point to spare), and the
    points used.

    The slope is interpolated (Hermite: value and derivative, i.e. the curvature) through
    the bracket's ends and up to three known points nearest them, within 1.5× in s.
    """
    centre = math.sqrt(left.scale * right.scale)
    chosen = [left, right]
    # Points closer together than this add rounding, not information.
    apart = 1e-3 * (right.scale - left.scale)
    for point in sorted(known, key=lambda p: abs(math.log(p.scale / centre))):
        if (len(chosen) < 5 and left.scale / 1.5 <= point.scale <= right.scale * 1.5
                and all(abs(point.scale - p.scale) > apart for p in chosen)):
            chosen.append(point)
    roots = [_bracketed_root(_slope_interpolant(chosen[:count]), left, right)
             for count in range(2, len(chosen) + 1)]
    if len(roots) < 2 or roots[-1] is None or roots[-2] is None:
        cubic = roots[0]
        return (cubic if cubic is not None else centre), math.inf, chosen
    return roots[-1], abs(roots[-1] - roots[-2]), chosen


def _interpolated_optimum(root: float, points: list[_Point], passes: int) -> Optimum:
    """The optimum at an interpolated root: its loss is the nearest point's plus the
    integral of the slope interpolated through ``points`` up to the root (5-point
    Gauss-Legendre, exact for the interpolant, whose degree is at most 9)."""
    slope = _slope_interpolant(points)
    nearest = min(points, key=lambda p: abs(p.scale - root))
    start = nearest.scale
    nodes, weights = np.polynomial.legendre.leggauss(5)
    half = (root - start) / 2
    rise = half * sum(weight * slope(start + half * (1 + node))
                      for node, weight in zip(nodes, weights, strict=True))
    return Optimum(1.0 / root, nearest.loss + float(rise), True, passes=passes)


def _slope_interpolant(points: Sequence[_Point]) -> Callable[[float], float]:
    """The polynomial matching the slope and the curvature at every point: Newton's form
    over the doubled nodes (confluent divided differences)."""
    nodes = [p.scale for p in points for _ in range(2)]
    table = [p.slope for p in points for _ in range(2)]
    coefficients = [table[0]]
    for order in range(1, len(nodes)):
        table = [
            points[i // 2].curvature if order == 1 and i % 2 == 0
            else (table[i + 1] - table[i]) / (nodes[i + order] - nodes[i])
            for i in range(len(table) - 1)
        ]
        coefficients.append(table[0])

    def slope(s: float) -> float:
        value = coefficients[-1]
        for coefficient, node in zip(coefficients[-2::-1], nodes[-2::-1], strict=True):
            value = value * (s - node) + coefficient
        return value

    return slope


def _bracketed_root(
    slope: Callable[[float], float], left: _Point, right: _Point
) -> float | None:
    """Bisection on (left, right), where the slope rises from negative to positive; None when
    the interpolant does not rise throughout, as the true slope does (its derivative is a
    variance)."""
    low, high = left.scale, right.scale
    samples = [slope(low + (high - low) * i / 64) for i in range(65)]
    if not (samples[0] < 0 < samples[-1]
            and all(a < b for a, b in zip(samples, samples[1:], strict=False))):
        return None
    for _ in range(60):
        middle = (low + high) / 2
        if slope(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2
