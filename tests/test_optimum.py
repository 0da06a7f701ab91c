"""The scalar optimum search on exact float64 functions (no torch, no engine)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from infonce_cli.optimum import (
    MAX_REFINE_PASSES,
    NO_OPTIMUM_HOT,
    RELATIVE_PRECISION,
    Point,
    bracketed_root,
    find_optimum,
    slope_interpolant,
)

from .conftest import ROOT


class Problem:
    """Queries whose positives score ``positives`` against shared negative scores: the mean
    loss and its derivatives in s = 1/τ, exactly (float64, log-sum-exp shifted)."""

    def __init__(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        self.positives, self.negatives = positives, negatives
        self.calls: list[list[float]] = []

    def point(self, scale: float) -> Point:
        scores = np.concatenate([np.broadcast_to(self.negatives, (len(self.positives),
                                                                  len(self.negatives))),
                                 self.positives[:, None]], axis=1)
        logits = scale * scores
        top = logits.max(axis=1, keepdims=True)
        weights = np.exp(logits - top)
        total = weights.sum(axis=1)
        mean = (weights * scores).sum(axis=1) / total
        variance = (weights * (scores - mean[:, None]) ** 2).sum(axis=1) / total
        loss = np.log(total) + top[:, 0] - scale * self.positives
        return Point(scale, float(loss.mean()), float((mean - self.positives).mean()),
                     float(variance.mean()))

    def slope_at_zero(self) -> float:
        count = len(self.negatives) + 1
        return float(((self.negatives.sum() + self.positives) / count - self.positives).mean())

    def evaluate(self, scales: list[float]) -> tuple[list[Point], float]:
        self.calls.append(scales)
        return [self.point(s) for s in scales], self.slope_at_zero()

    def root(self) -> float:
        """The root of the slope in s, by bisection to the last bit."""
        low, high = 1e-3, 1e4
        for _ in range(200):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if self.point(middle).slope < 0 else (low, middle)
        return math.sqrt(low * high)

    def grid_loss(self, temperatures: tuple[float, ...]) -> list[float]:
        return [self.point(1.0 / t).loss for t in temperatures]


def _problem(seed: int, positive_mean: float = 0.17, spread: float = 0.05) -> Problem:
    rng = np.random.default_rng(seed)
    return Problem(rng.normal(positive_mean, 0.03, size=32), rng.normal(0.0, spread, size=500))


GRID = tuple(float(t) for t in np.geomspace(0.01, 1.0, 12))


@pytest.mark.parametrize("seed", range(5))
def test_optimum_is_the_root_of_the_slope(seed):
    problem = _problem(seed)
    optimum = find_optimum(problem.evaluate, GRID, problem.grid_loss(GRID))
    assert optimum.converged
    root = problem.root()
    assert abs(optimum.temperature * root - 1) <= RELATIVE_PRECISION
    assert optimum.loss_mean == pytest.approx(problem.point(root).loss, rel=1e-9)
    assert optimum.passes == len(problem.calls) <= MAX_REFINE_PASSES
    for scales in problem.calls:  # each pass asks for distinct scales, ascending
        assert scales == sorted(set(scales))
        assert all(s > 0 for s in scales)


@pytest.mark.parametrize("grid", [(0.5, 0.8, 1.0), (1e-4, 2e-4, 4e-4)])
def test_optimum_beyond_the_grid_is_bracketed_by_extending_it(grid):
    problem = _problem(0)
    optimum = find_optimum(problem.evaluate, grid, problem.grid_loss(grid))
    assert optimum.converged
    assert abs(optimum.temperature * problem.root() - 1) <= RELATIVE_PRECISION


def test_looser_precision_takes_no_more_passes():
    problem, loose = _problem(1), _problem(1)
    tight = find_optimum(problem.evaluate, GRID, problem.grid_loss(GRID))
    rough = find_optimum(loose.evaluate, GRID, loose.grid_loss(GRID), precision=1e-2)
    assert rough.converged
    assert rough.passes <= tight.passes
    assert abs(rough.temperature * problem.root() - 1) <= 1e-2


def test_known_points_around_the_root_settle_it_without_evaluating():
    problem = _problem(2)
    root = problem.root()
    known = ([problem.point(root * (1 + d)) for d in (-0.15, -0.05, 0.0, 0.05, 0.15)],
             problem.slope_at_zero())

    def evaluate(scales: list[float]) -> tuple[list[Point], float]:
        raise AssertionError("no evaluation needed")

    optimum = find_optimum(evaluate, GRID, problem.grid_loss(GRID), known)
    assert optimum.converged
    assert optimum.passes == 0
    assert abs(optimum.temperature * root - 1) <= RELATIVE_PRECISION


def test_no_finite_optimum_when_positives_lose_to_their_average_candidate():
    problem = _problem(3, positive_mean=-0.2)
    assert problem.slope_at_zero() >= 0
    optimum = find_optimum(problem.evaluate, GRID, problem.grid_loss(GRID))
    assert optimum.temperature is None
    assert optimum.loss_mean is None
    assert not optimum.converged
    assert optimum.reason == NO_OPTIMUM_HOT
    assert optimum.passes == 1


def test_gives_up_unconverged_after_the_last_pass():
    """A loss that keeps falling (slope −1 everywhere) is never bracketed."""
    calls = []

    def evaluate(scales: list[float]) -> tuple[list[Point], float]:
        calls.append(scales)
        return [Point(s, -s, -1.0, 0.0) for s in scales], -1.0

    optimum = find_optimum(evaluate, (0.1, 1.0), [-10.0, -1.0])
    assert not optimum.converged
    assert optimum.passes == len(calls) == MAX_REFINE_PASSES
    assert optimum.temperature is not None
    assert optimum.gradient == -1.0


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_slope_interpolant_reproduces_polynomials_of_its_degree(rng, count):
    """Through n points (value and derivative) the interpolant has degree 2n − 1."""
    polynomial = np.polynomial.Polynomial(rng.normal(size=2 * count))
    derivative = polynomial.deriv()
    nodes = np.linspace(0.5, 3.0, count) + rng.uniform(-0.1, 0.1, size=count)
    points = [Point(float(x), 0.0, float(polynomial(x)), float(derivative(x))) for x in nodes]
    interpolant = slope_interpolant(points)
    for x in np.linspace(0.5, 3.0, 17):
        assert interpolant(float(x)) == pytest.approx(polynomial(x), rel=1e-9, abs=1e-9)


def test_bracketed_root_of_a_rising_cubic():
    left, right = Point(0.5, 0.0, -1.0, 0.0), Point(3.0, 0.0, 1.0, 0.0)
    root = bracketed_root(lambda s: s**3 - 2.0, left, right)
    assert root == pytest.approx(2.0 ** (1 / 3), rel=1e-15)


def test_the_search_does_not_import_torch():
    code = "import sys, infonce_cli.optimum; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
