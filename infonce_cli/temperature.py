"""Temperature sweeps: the loss at every grid temperature from one similarity pass, and the
exact loss-minimising temperature.

This is the torch side of the fit: it folds the scores at the temperatures the search
asks for (with the softmax moments that give the slope and curvature of the mean loss
in s = 1/τ) and hands them to ``optimum.find_optimum``, the plain-float search. When
the scores fit the memory budget they are computed once and kept, so later passes only
redo the exponentials; when they do not, a pilot on the first queries places probes
that the grid pass evaluates too, which usually pins the optimum with no further pass.
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
    binned_width,
    fold_passes,
    similarity_passes,
)
from .errors import InfonceError, UsageError, arg
from .metrics import at_chance
from .optimum import MAX_REFINE_PASSES as MAX_REFINE_PASSES
from .optimum import NO_OPTIMUM_COLD, NO_OPTIMUM_FLAT, Point, find_optimum
from .optimum import NO_OPTIMUM_HOT as NO_OPTIMUM_HOT
from .optimum import RELATIVE_PRECISION as RELATIVE_PRECISION
from .results import Optimum

Summer = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over the ranks of a distributed run."""

DEFAULT_GRID = (0.01, 1.0, 50)


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
        raise UsageError(f"{arg('min')} must be a finite number > 0, got {minimum:g}")
    if not minimum < maximum:
        raise UsageError(f"{arg('min')} ({minimum:g}) must be below {arg('max')} ({maximum:g})")
    if steps < 2:
        raise UsageError(f"{arg('steps')} must be at least 2, got {steps}")
    if spacing == "log":
        values = np.geomspace(minimum, maximum, steps)
    elif spacing == "linear":
        values = np.linspace(minimum, maximum, steps)
    else:
        raise UsageError(f"{arg('spacing')} must be log or linear, got {spacing!r}")
    values[0], values[-1] = minimum, maximum
    return tuple(round(float(v), 12) for v in values)


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
    """Sorted, distinct temperatures, each finite and > 0."""
    if not temperatures:
        raise UsageError(f"{arg('temperatures')}: give at least one temperature")
    for t in temperatures:
        if not (t > 0 and math.isfinite(t)):
            raise UsageError(f"{arg('temperatures')}: every temperature must be > 0, got {t:g}")
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
    """Similarity passes, kept in memory when all their scores fit the memory budget (at the
    size they are kept in: 8 bytes a score in float64, 4 otherwise)."""
    passes = similarity_passes(query, positive, negatives, options, ids)
    if sum(p.score_bytes for p in passes) <= options.max_memory:
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
        raise InfonceError(f"{arg('temperature')} auto finds no finite optimum: "
                           f"{optimum.reason}; give a temperature instead")
    return optimum.temperature, fold_passes(passes, [optimum.temperature])


def sweep_passes(
    passes: Sequence[SimilarityPass | CachedPass],
    temperatures: tuple[float, ...],
    on_rows_done: Callable[[int], None] | None,
    summer: Summer | None,
) -> SweepScores:
    """The grid pass over prepared passes, then the fit. When the scores are recomputed at
    every step, a pilot on the first queries runs first, and the grid pass also probes
    around its optimum: the fit then usually needs no more pass over the scores.

    When the grid pass takes its sums from histograms of the scores (``binned``), moments
    cost no exponentials: it takes them at the pilot's probes, at the grid temperatures
    near its optimum (at all of them without a pilot) and, when that optimum lies beyond
    the grid, on a ladder out to it. Otherwise probes that a dense grid already holds
    stand in for the pilot's: the grid pass takes the moments at those grid temperatures
    instead."""
    scales = _pilot_probes(passes, temperatures) if summer is None else []
    probes = _binned_probes(temperatures, scales)
    if binned_width(passes[0], [*temperatures, *probes]) is None:
        on_grid = _grid_probes(temperatures, scales)
        probes = [temperatures[i] for i in on_grid] if on_grid else [1.0 / s for s in scales]
    kept = [t for t in temperatures if t not in probes]
    folded = fold_passes(passes, kept, probes, on_rows_done)
    # The grid's columns in grid order (a probe that is a grid temperature in its place).
    column = {t: i for i, t in enumerate([*kept, *probes])}
    loss = folded.loss[:, torch.tensor([column[t] for t in temperatures],
                                       device=folded.loss.device)]
    grid = replace(folded, loss=loss, softmax_gap=None, softmax_variance=None,
                   mean_candidate_gap=None)
    means = _Means(summer)
    known = _points(folded, [1.0 / t for t in probes], means, len(kept)) if probes else None
    optimum = fit_temperature(passes, temperatures, grid, summer, known)
    return SweepScores(grid, temperatures, optimum)


def _binned_probes(temperatures: Sequence[float], scales: Sequence[float]) -> list[float]:
    """The probe temperatures of a binned grid pass, ascending: without a pilot, the whole
    grid; with one (its probes at ``scales``), those probes, the grid temperatures within
    ``_WINDOW`` of its optimum, and a ladder out to that optimum when it lies beyond the
    grid."""
    if not scales:
        return list(temperatures)
    pilot = 1.0 / scales[len(scales) // 2]
    near = [t for t in temperatures if pilot / _WINDOW <= t <= pilot * _WINDOW]
    return sorted({*near, *(1.0 / s for s in scales), *_ladder(temperatures, pilot)})


def _ladder(temperatures: Sequence[float], pilot: float) -> list[float]:
    """Temperatures from the grid's edge out to a little past the pilot's optimum when that
    lies beyond the grid, at most ``_LADDER_RUNGS``, spaced as a 64-step default grid (or
    wider, to reach)."""
    low, high = temperatures[0], temperatures[-1]
    if low <= pilot <= high:
        return []
    edge, far = (high, pilot * _LADDER_REACH) if pilot > high else (low, pilot / _LADDER_REACH)
    span = abs(math.log(far / edge))
    rungs = min(_LADDER_RUNGS, math.ceil(span / math.log(_LADDER_RATIO)))
    return [edge * math.exp(math.copysign(span, far - edge) * i / rungs)
            for i in range(1, rungs + 1)]


def _grid_probes(temperatures: Sequence[float], probes: Sequence[float]) -> list[int]:
    """The grid temperatures that can stand in for the pilot's probes (scales s): as many as
    there are probes, the nearest to the middle one, when they lie on both sides of it and
    reach between half and twice as far as the probes do (a grid too coarse, or too fine
    to bracket the pilot's error, keeps the probes)."""
    if not probes:
        return []
    middle = probes[len(probes) // 2]
    reach = max(abs(s / middle - 1) for s in probes)
    nearest = sorted(range(len(temperatures)),
                     key=lambda i: abs(math.log(middle * temperatures[i])))[:len(probes)]
    spread = [1.0 / temperatures[i] / middle - 1 for i in nearest]
    farthest = max(map(abs, spread), default=0.0)
    if (len(nearest) < len(probes) or not reach / 2 <= farthest <= 2 * reach
            or min(spread) >= 0 or max(spread) <= 0):
        return []
    return sorted(nearest)


def _pilot_probes(
    passes: Sequence[SimilarityPass | CachedPass], temperatures: Sequence[float]
) -> list[float]:
    """Scales s clustered around the optimum of the first queries, when that is worth it."""
    if isinstance(passes[0], CachedPass) or passes[0].rows < 4 * _PILOT_ROWS:
        return []
    grid = (*temperatures[:-1:max(1, len(temperatures) // _PILOT_GRID)], temperatures[-1])
    pilot_grid = fold_passes(passes, grid, first_rows=_PILOT_ROWS)
    pilot = fit_temperature(passes, grid, pilot_grid, first_rows=_PILOT_ROWS,
                            precision=_PILOT_PRECISION)
    if pilot.temperature is None:
        return []
    return [1.0 / pilot.temperature * (1 + d) for d in _PILOT_CLUSTER]


def fit_temperature(
    passes: Sequence[SimilarityPass | CachedPass],
    temperatures: Sequence[float],
    grid: PerSampleScores,
    summer: Summer | None = None,
    known: tuple[list[Point], float] | None = None,
    first_rows: int | None = None,
    precision: float = RELATIVE_PRECISION,
) -> Optimum:
    """The exact minimiser of the mean loss over all τ > 0, from the ``grid``'s per-sample
    scores (its losses (N, T) at the ``temperatures``).

    Each step folds the scores at a handful of probe temperatures with their softmax
    moments; ``known`` holds points already evaluated (and the slope at s = 0). In a
    distributed run (``summer`` given) every mean is taken over all ranks' queries;
    ``first_rows`` restricts the fit to the first queries (a pilot), which may settle for
    a looser relative ``precision``.
    """
    means = _Means(summer)
    if means.count(~grid.positive_unbeaten) == 0:
        # The loss falls as τ → 0, unless every candidate ties with its positive: then it
        # is log|C| at every τ (each query's loss at any one τ tells).
        off = ~at_chance(grid.loss[:, 0].detach().double().cpu().numpy(),
                         grid.num_candidates.cpu().numpy())
        return Optimum(None, None, False, NO_OPTIMUM_FLAT
                       if means.count(torch.from_numpy(off)) == 0 else NO_OPTIMUM_COLD)

    def evaluate(probes: list[float]) -> tuple[list[Point], float]:
        result = fold_passes(passes, [], [1.0 / s for s in probes], first_rows=first_rows)
        return _points(result, probes, means, 0)

    return find_optimum(evaluate, temperatures, means.mean(grid.loss.detach()), known,
                        precision)


def _points(
    result: PerSampleScores, probes: Sequence[float], means: _Means, first_probe: int
) -> tuple[list[Point], float]:
    """Mean loss, slope and curvature at each probe, and the mean slope at s = 0."""
    assert result.softmax_gap is not None
    assert result.softmax_variance is not None
    assert result.mean_candidate_gap is not None
    loss = means.mean(result.loss.detach()[:, first_probe:])
    slope, curvature = (means.mean(t.detach()) for t in (result.softmax_gap,
                                                          result.softmax_variance))
    points = [Point(*values) for values in zip(probes, loss, slope, curvature, strict=True)]
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
_WINDOW = 1.5
"""Grid temperatures within this ratio of the pilot's optimum are probed too."""
_LADDER_RATIO = 100 ** (1 / 63)
_LADDER_RUNGS = 64
_LADDER_REACH = 1.25
"""How far past the pilot's optimum (a ratio in τ) a ladder beyond the grid reaches."""
