"""The loss-minimising temperature as a scalar search: plain floats, no torch.

With s = 1/τ the mean InfoNCE loss is convex in s: its slope is the mean over
queries of E_softmax[x] − x_pos and its curvature the mean softmax variance of
the similarities, which is ≥ 0. ``find_optimum`` brackets the root of the slope
on a grid of temperatures (extending past its edges by doubling or halving s)
and shrinks the bracket with steps on Hermite interpolants of the slope. It asks
a caller-supplied ``evaluate`` for the loss, slope and curvature at a few scales
at a time, so that each request can be one pass over the scores.

A point here is a ``Point(scale, loss, slope, curvature)``; ``evaluate(scales)``
returns the points at those scales and the mean slope at s = 0 (τ → ∞), which
says whether a finite optimum exists at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .results import Optimum

RELATIVE_PRECISION = 1e-6
"""The fitted τ is within this relative distance of the true optimum when converged."""
MAX_REFINE_PASSES = 12
"""Evaluations the search makes at most before it gives up (unconverged)."""
NO_OPTIMUM_COLD = ("every positive scores at or above all of its negatives, so the loss "
                   "keeps falling as τ → 0")
NO_OPTIMUM_FLAT = ("every candidate scores as its query's positive, so the loss is log|C| "
                   "at every τ")
NO_OPTIMUM_HOT = ("the positives score at or below their average candidate, so the loss "
                  "keeps falling as τ → ∞")
"""Why there is no finite optimum (``Optimum.reason``)."""
_EXTEND_STEPS = 8
"""Doublings (or halvings) of s tried per pass when the optimum lies beyond the grid."""


@dataclass(frozen=True)
class Point:
    """The mean loss and its first two derivatives in s = 1/τ at one scale s."""

    scale: float
    """s = 1/τ."""
    loss: float
    slope: float
    """d loss / ds: the mean of E_softmax[x] − x_pos."""
    curvature: float
    """d² loss / ds²: the mean softmax variance of the similarities (≥ 0)."""


Evaluate = Callable[[list[float]], tuple[list[Point], float]]
"""Scales s (ascending) → the points at them, and the mean slope at s = 0."""


def find_optimum(
    evaluate: Evaluate,
    temperatures: Sequence[float],
    grid_loss: Sequence[float],
    known: tuple[list[Point], float] | None = None,
    precision: float = RELATIVE_PRECISION,
) -> Optimum:
    """The temperature that minimises a convex-in-1/τ mean loss, to a relative ``precision``.

    ``temperatures`` is the grid (ascending τ) and ``grid_loss`` the mean loss at each of
    its temperatures; ``evaluate`` gives exact points at the scales the search asks for
    (one call a pass, at most ``MAX_REFINE_PASSES`` calls). ``known`` holds points already
    evaluated, with the slope at s = 0: the search then starts from them without calling
    ``evaluate`` first.

    The root of the slope is settled by an evaluated point whose Newton step is below the
    precision, by a bracket that narrow, or, between probes, by interpolation: the slope
    and curvature known at the probes around the bracket define Hermite interpolants of
    the slope, and when the roots of two of them, one a point richer than the other, agree
    to a tenth of the precision, the richer one's root is taken without another pass.
    When the slope at s = 0 is ≥ 0 there is no finite optimum (``NO_OPTIMUM_HOT``).

    One query whose positive scores 0.5 against negatives at 0.9 and −0.5:

    >>> import math
    >>> scores = (0.5, 0.9, -0.5)  # the positive's first
    >>> def point(s):
    ...     weights = [math.exp(s * x) for x in scores]
    ...     total = sum(weights)
    ...     mean = sum(w * x for w, x in zip(weights, scores)) / total
    ...     variance = sum(w * (x - mean) ** 2 for w, x in zip(weights, scores)) / total
    ...     return Point(s, math.log(total) - s * scores[0], mean - scores[0], variance)
    >>> def evaluate(scales):
    ...     return [point(s) for s in scales], sum(scores) / len(scores) - scores[0]
    >>> grid = (0.1, 0.3, 1.0, 3.0)
    >>> optimum = find_optimum(evaluate, grid, [point(1 / t).loss for t in grid])
    >>> optimum.converged, round(optimum.temperature, 5)
    (True, 1.5279)
    >>> abs(point(1 / optimum.temperature).slope) < 1e-6
    True
    """
    scales = [1.0 / t for t in temperatures]
    best = int(np.argmin(grid_loss))
    # The grid is sorted by τ, so its scales run downwards.
    lower = scales[best + 1] if best + 1 < len(scales) else None  # smaller s, larger τ
    upper = scales[best - 1] if best > 0 else None  # larger s, smaller τ
    estimate = _parabola_vertex(scales, grid_loss, best)
    points_so_far: list[Point] = []
    for passes_done in range(0 if known else 1, MAX_REFINE_PASSES + 1):
        if passes_done == 0 and known:
            points, slope_at_zero = known
        else:
            seen = {p.scale for p in points_so_far}
            probes = _next_probes(lower, upper, estimate, points_so_far, scales)
            probes = sorted({*probes, *(b for b in (lower, upper)
                                        if b is not None and b not in seen)})
            points, slope_at_zero = evaluate(probes)
        if slope_at_zero >= 0:
            return Optimum(None, None, False, NO_OPTIMUM_HOT, passes=passes_done)
        points_so_far.extend(points)
        points_so_far.sort(key=lambda p: p.scale)
        # A point whose Newton step is below the precision is the optimum (this also
        # covers a slope of exactly zero).
        settled = [p for p in points if p.curvature > 0
                   and abs(p.slope) <= precision / 2 * p.scale * p.curvature]
        if settled:
            return _optimum(min(settled, key=lambda p: abs(p.slope)), True, passes_done)
        below = [p.scale for p in points_so_far if p.slope < 0]
        above = [p.scale for p in points_so_far if p.slope > 0]
        if below and (lower is None or below[-1] > lower):
            lower = below[-1]
        if above and (upper is None or above[0] < upper):
            upper = above[0]
        if (lower is None or upper is None
                or not {lower, upper} <= {p.scale for p in points_so_far}):
            continue
        left = next(p for p in points_so_far if p.scale == lower)
        right = next(p for p in points_so_far if p.scale == upper)
        if (upper - lower) <= precision * lower:
            return _optimum(min((left, right), key=lambda p: abs(p.slope)), True, passes_done)
        estimate, spread, used = interpolated_root(left, right, points_so_far)
        if spread <= precision / 10 * estimate:
            return interpolated_optimum(estimate, used, passes_done)
    closest = min(points_so_far, key=lambda p: abs(p.slope))
    return _optimum(closest, False, MAX_REFINE_PASSES)


def _next_probes(
    lower: float | None, upper: float | None, estimate: float | None, known: list[Point],
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


def _optimum(point: Point, converged: bool, passes: int) -> Optimum:
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


def interpolated_root(
    left: Point, right: Point, known: Sequence[Point]
) -> tuple[float, float, list[Point]]:
    """The root of the slope inside the bracket (left, right), how far it moves when the
    farthest of the points used is left out (inf when there is no point to spare), and the
    points used.

    The slope is interpolated (Hermite: value and derivative, i.e. the curvature) through
    the bracket's ends and up to three known points nearest them, within 1.5× in s.

    >>> left, right = Point(1.0, 0.0, -1.0, 2.0), Point(2.0, 0.0, 1.0, 2.0)
    >>> root, spread, used = interpolated_root(left, right, [left, right])
    >>> root, spread, len(used)
    (1.5, inf, 2)
    """
    centre = math.sqrt(left.scale * right.scale)
    chosen = [left, right]
    # Points closer together than this add rounding, not information: with a dense set
    # of probes, near neighbours would make the interpolant's root look less settled.
    apart = 0.2 * (right.scale - left.scale)
    for point in sorted(known, key=lambda p: abs(math.log(p.scale / centre))):
        if (len(chosen) < 5 and left.scale / 1.5 <= point.scale <= right.scale * 1.5
                and all(abs(point.scale - p.scale) > apart for p in chosen)):
            chosen.append(point)
    roots = [bracketed_root(slope_interpolant(chosen[:count]), left, right)
             for count in range(2, len(chosen) + 1)]
    if len(roots) < 2 or roots[-1] is None or roots[-2] is None:
        cubic = roots[0]
        return (cubic if cubic is not None else centre), math.inf, chosen
    return roots[-1], abs(roots[-1] - roots[-2]), chosen


def interpolated_optimum(root: float, points: Sequence[Point], passes: int) -> Optimum:
    """The optimum at an interpolated root: its loss is the nearest point's plus the
    integral of the slope interpolated through ``points`` up to the root (5-point
    Gauss-Legendre, exact for the interpolant, whose degree is at most 9).

    >>> optimum = interpolated_optimum(1.5, [Point(1.0, 2.0, -1.0, 2.0),
    ...                                      Point(2.0, 2.0, 1.0, 2.0)], passes=1)
    >>> optimum.temperature, optimum.loss_mean, optimum.converged
    (0.6666666666666666, 1.75, True)
    """
    slope = slope_interpolant(points)
    nearest = min(points, key=lambda p: abs(p.scale - root))
    start = nearest.scale
    nodes, weights = np.polynomial.legendre.leggauss(5)
    half = (root - start) / 2
    rise = half * sum(weight * slope(start + half * (1 + node))
                      for node, weight in zip(nodes, weights, strict=True))
    return Optimum(1.0 / root, nearest.loss + float(rise), True, passes=passes)


def slope_interpolant(points: Sequence[Point]) -> Callable[[float], float]:
    """The polynomial matching the slope and the curvature at every point: Newton's form
    over the doubled nodes (confluent divided differences). Through n points its degree is
    at most 2n − 1, so it reproduces such a polynomial exactly.

    >>> slope = slope_interpolant([Point(0.0, 0.0, 0.0, 0.0), Point(1.0, 0.0, 1.0, 3.0)])
    >>> slope(0.5), slope(2.0)  # s³
    (0.125, 8.0)
    """
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


def bracketed_root(
    slope: Callable[[float], float], left: Point, right: Point
) -> float | None:
    """Bisection on (left, right), where the slope rises from negative to positive; None when
    the interpolant does not rise throughout, as the true slope does (its derivative is a
    variance).

    >>> left, right = Point(0.0, 0.0, -1.0, 0.0), Point(4.0, 0.0, 3.0, 0.0)
    >>> bracketed_root(lambda s: s - 1.0, left, right)
    1.0
    >>> bracketed_root(lambda s: (s - 1.0) ** 2 - 1.0, left, right) is None  # not rising
    True
    """
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
