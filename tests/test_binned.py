"""Exponential sums from histograms of the scores (many temperatures in one pass): against
a float64 loop in every negative mode, against one exponential per score, the series'
remainder, and where the histograms are not used."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infonce_cli.binned import ORDER, BinnedSums, Bins, bin_width
from infonce_cli.engine import (
    EngineOptions,
    SimilarityPass,
    binned_width,
    fold_passes,
    score_embeddings,
    similarity_passes,
)
from infonce_cli.runs import candidate_ids
from infonce_cli.similarity import Similarity
from infonce_cli.temperature import prepare_passes, sweep_embeddings, temperature_grid

from .reference import candidate_sets, reference

N, M, K, D = 48, 5, 40, 12
GRID = temperature_grid(0.01, 2.0, 17)


@pytest.fixture
def data(rng):
    query = rng.normal(size=(N, D)).astype(np.float32)
    positive = (query + rng.normal(size=(N, D))).astype(np.float32)
    return (query, positive, rng.normal(size=(N, M, D)).astype(np.float32),
            rng.normal(size=(K, D)).astype(np.float32))


@pytest.mark.parametrize("largest", [1.0, 7.5, 100.0, 150.0, 220.0])
def test_the_series_remainder_is_within_tolerance_at_the_largest_scale(largest):
    width = bin_width([0.5, largest])
    assert width is not None
    assert math.log2(width).is_integer()
    delta = np.linspace(-0.5, 0.5, 2001)
    y = largest * width * delta
    series = sum(y**m / math.factorial(m) for m in range(ORDER + 1))
    assert np.max(np.abs(series / np.exp(y) - 1)) <= 2.0**-27
    # Twice as wide would not be.
    y = 2 * y
    series = sum(y**m / math.factorial(m) for m in range(ORDER + 1))
    assert np.max(np.abs(series / np.exp(y) - 1)) > 2.0**-27


def test_scales_too_large_for_bins_take_exponentials():
    assert bin_width([300.0]) is None


@pytest.mark.parametrize(("negatives_key", "in_batch", "batch_size"), [
    (None, False, None), (None, False, 10), ("paired", False, None), ("shared", False, None),
    ("paired", True, None), ("shared", True, None)])
def test_losses_at_every_temperature_match_the_float64_loop(data, negatives_key, in_batch,
                                                            batch_size):
    query, positive, paired, shared = data
    negatives = {"paired": paired, "shared": shared, None: None}[negatives_key]
    options = EngineOptions(temperatures=GRID, in_batch=in_batch, batch_size=batch_size)
    passes = similarity_passes(query, positive, negatives, options)
    assert binned_width(passes[0], GRID) is not None
    got = fold_passes(passes, GRID)
    for index, temperature in enumerate(GRID):
        want = reference(query, positive, negatives, temperature=temperature,
                         in_batch=in_batch, batch_size=batch_size)
        # Float32 rounding of the similarities is scaled by 1/τ, binned or not.
        np.testing.assert_allclose(got.loss[:, index].numpy(), want.loss, rtol=1e-5,
                                   atol=1e-5 * max(1.0, 0.05 / temperature))
        np.testing.assert_array_equal(got.rank.numpy(), want.rank)


def test_masked_candidates_and_several_positives_are_left_out(data, rng):
    """Rows sharing a positive id (several positives of one query) are not each other's
    negatives; the excluded entries must not reach the histograms."""
    query, positive, _, shared = data
    pos_ids = rng.integers(0, 12, N)
    neg_ids = rng.integers(0, 12, K)

    def drop(i, j):
        return pos_ids[j] == pos_ids[i] if j < N else neg_ids[j - N] == pos_ids[i]

    options = EngineOptions(temperatures=GRID, in_batch=True)
    got = score_embeddings(query, positive, shared, options,
                           ids=candidate_ids(pos_ids, neg_ids))
    assert int(got.masked.sum()) > 0
    for index, temperature in enumerate(GRID):
        want = reference(query, positive, shared, temperature=temperature, in_batch=True,
                         drop=drop)
        # Float32 rounding of the similarities is scaled by 1/τ, binned or not.
        np.testing.assert_allclose(got.loss[:, index].numpy(), want.loss, rtol=1e-5,
                                   atol=1e-5 * max(1.0, 0.05 / temperature))


def test_softmax_moments_at_the_probes_match_float64(data):
    """The slope and curvature of the loss in s that the temperature fit uses, from the
    derivatives of the binned sums."""
    query, positive, paired, _ = data
    probes = (0.02, 0.05, 0.3)
    passes = similarity_passes(query, positive, paired, EngineOptions(in_batch=True))
    got = fold_passes(passes, GRID, probes)
    sets = candidate_sets(N, paired, True, None, positive)
    unit = [v / np.linalg.norm(v) for v in np.asarray(query, np.float64)]
    for i in range(N):
        scores = np.array([unit[i] @ (positive[i] / np.linalg.norm(positive[i]))]
                          + [unit[i] @ (vec / np.linalg.norm(vec)) for _, vec in sets[i]],
                          dtype=np.float64)
        gap = scores - scores[0]
        assert got.mean_candidate_gap[i].item() == pytest.approx(gap[1:].sum() / len(scores),
                                                                 abs=1e-6)
        for k, temperature in enumerate(probes):
            weights = np.exp((scores - scores.max()) / temperature)
            weights /= weights.sum()
            mean = weights @ gap
            assert got.softmax_gap[i, k].item() == pytest.approx(mean, abs=1e-6)
            variance = weights @ (gap - mean) ** 2
            assert got.softmax_variance[i, k].item() == pytest.approx(variance, rel=1e-4,
                                                                      abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_binned_and_one_exponential_per_score_agree(real_data, dtype):
    """On the real embeddings: the same scores folded at 17 temperatures at once (binned)
    and a few at a time (an exponential per score and temperature)."""
    query, positive = real_data["query"][:400], real_data["positive"][:400]
    options = EngineOptions(dtype=dtype)
    passes = similarity_passes(query, positive, real_data["shared"][:300], options)
    assert binned_width(passes[0], GRID) is not None
    binned = fold_passes(passes, GRID).loss
    few = torch.cat([fold_passes(passes, GRID[i:i + 4]).loss for i in range(0, len(GRID), 4)],
                    dim=1)
    torch.testing.assert_close(binned, few, rtol=2e-6, atol=2e-6)


def test_the_moment_table_is_left_zeroed_for_the_next_block(rng):
    bins = Bins.for_fold(bin_width(GRID), 8, [1.0], 1)
    for rows in (8, 5):
        scores = torch.from_numpy(rng.uniform(-1, 1, (rows, 300)).astype(np.float32))
        scores[0, :7] = -math.inf  # excluded entries
        summed = BinnedSums(torch.zeros(rows), bins)
        summed.add(scores)
        loss = summed.finish()[0][:, 0].double()
        expected = torch.log1p(torch.exp(scores.double()).sum(dim=1))
        torch.testing.assert_close(loss, expected.float().double(), rtol=1e-6, atol=0)
        assert not bins.table.any()


@pytest.mark.parametrize("change", ["few temperatures", "float64", "dot", "small budget",
                                    "tiny temperature"])
def test_where_bins_do_not_apply_the_fold_takes_exponentials(data, change):
    query, positive, _, _ = data
    options = EngineOptions(
        dtype=torch.float64 if change == "float64" else torch.float32,
        similarity=Similarity.DOT if change == "dot" else Similarity.COSINE,
        max_memory=2**16 if change == "small budget" else 2**29)
    temperatures = {"few temperatures": GRID[:15],
                    "tiny temperature": (0.001, *GRID)}.get(change, GRID)
    passes = similarity_passes(query, positive, None, options)
    assert binned_width(passes[0], temperatures) is None
    got = fold_passes(passes, temperatures)
    for index in (0, len(temperatures) - 1):
        want = reference(query, positive, temperature=temperatures[index],
                         kind=options.similarity.value)
        np.testing.assert_allclose(got.loss[:, index].numpy(), want.loss, rtol=1e-5,
                                   atol=1e-5 * max(1.0, 0.05 / temperatures[index]))


def test_inputs_that_need_gradients_take_exponentials(data):
    query, positive, _, _ = data
    q = torch.from_numpy(query).requires_grad_()
    out = score_embeddings(q, torch.from_numpy(positive), options=EngineOptions(
        temperatures=GRID))
    out.loss.mean().backward()
    assert q.grad is not None
    assert torch.isfinite(q.grad).all()


def _first_order_gap(query, positive, temperature, rows=1024):
    """mean_i(E_softmax[x_i·] − x_ii) in float64, in-batch, a block of rows at a time."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    p = positive / np.linalg.norm(positive, axis=1, keepdims=True)
    q, p = q.astype(np.float64), p.astype(np.float64)
    total = 0.0
    for start in range(0, len(q), rows):
        scores = q[start:start + rows] @ p.T
        weights = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
        expected = (weights * scores).sum(axis=1) / weights.sum(axis=1)
        total += (expected - scores[np.arange(len(scores)), np.arange(start, start + len(scores))]
                  ).sum()
    return total / len(q)


@pytest.mark.parametrize(("noise", "bounds"), [(1.0, (0.1, 1.0)), (12.0, (0.01, 0.2))],
                         ids=["optimum below the grid", "optimum above the grid"])
def test_a_binned_grid_pass_pins_an_optimum_beyond_the_grid(noise, bounds):
    """Streamed inputs (a pilot runs first) with the optimum beyond the grid: the binned grid
    pass takes derivatives on a ladder out to the pilot's optimum, and the fit needs no
    pass after the grid's; the optimum is a float64 root of the slope to 1e-6."""
    rng = np.random.default_rng(0)
    n = 8192
    query = rng.normal(size=(n, 32)).astype(np.float32)
    positive = (query + noise * rng.normal(size=query.shape)).astype(np.float32)
    options = EngineOptions(max_memory=200 * 2**20)  # the scores (256 MiB) are not kept
    grid = temperature_grid(*bounds, 32)
    passes = prepare_passes(query, positive, None, options)
    assert isinstance(passes[0], SimilarityPass)  # streamed, not kept
    assert binned_width(passes[0], grid) is not None
    optimum = sweep_embeddings(query, positive, None, grid, options).optimum
    assert optimum.converged
    assert optimum.passes == 0
    assert not bounds[0] <= optimum.temperature <= bounds[1]
    assert _first_order_gap(query, positive, optimum.temperature * (1 + 1e-6)) < 0
    assert _first_order_gap(query, positive, optimum.temperature / (1 + 1e-6)) > 0
