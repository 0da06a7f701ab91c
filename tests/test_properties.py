"""Properties that hold for any input (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from infonce_cli.engine import EngineOptions, score_embeddings
from infonce_cli.similarity import Similarity

shapes = st.tuples(st.integers(2, 12), st.integers(1, 5), st.integers(2, 8))
seeds = st.integers(0, 2**32 - 1)
temperatures = st.floats(0.02, 5.0)


def _data(seed, n, m, d):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(n, d)).astype(np.float32)
    return query, rng.normal(size=(n, d)).astype(np.float32), rng.normal(
        size=(n, m, d)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(shapes, seeds, temperatures, st.sampled_from(list(Similarity)), st.booleans())
def test_loss_is_non_negative_and_bounded_by_rank(shape, seed, temperature, similarity, paired):
    query, positive, negatives = _data(seed, *shape)
    out = score_embeddings(query, positive, negatives if paired else None,
                           EngineOptions(temperatures=(temperature,), similarity=similarity))
    loss = out.loss[:, 0].numpy()
    assert (loss >= -1e-6).all()
    # A positive ranked r has r − 1 negatives at or above it: loss ≥ log(r) − rounding.
    assert (loss >= np.log(out.rank.numpy()) - 1e-4).all()


@settings(max_examples=30, deadline=None)
@given(shapes, seeds, temperatures)
def test_permuting_the_pairs_permutes_the_results(shape, seed, temperature):
    query, positive, negatives = _data(seed, *shape)
    order = np.random.default_rng(seed).permutation(len(query))
    options = EngineOptions(temperatures=(temperature,))
    for negs, permuted_negs in ((None, None), (negatives, negatives[order])):
        base = score_embeddings(query, positive, negs, options)
        moved = score_embeddings(query[order], positive[order], permuted_negs, options)
        np.testing.assert_allclose(moved.loss.numpy(), base.loss.numpy()[order], rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_array_equal(moved.rank.numpy(), base.rank.numpy()[order])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), temperatures)
def test_equal_similarities_give_log_candidates(k, temperature):
    query = np.array([[1.0, 0.0]], np.float32)
    positive = np.array([[0.0, 1.0]], np.float32)
    pool = np.tile(np.array([[0.0, -2.0]], np.float32), (k, 1))
    out = score_embeddings(query, positive, pool, EngineOptions(temperatures=(temperature,)))
    assert math.isclose(out.loss[0, 0].item(), math.log(k + 1), rel_tol=1e-5)
    assert out.rank.item() == k + 1


@settings(max_examples=30, deadline=None)
@given(shapes, seeds, temperatures, st.floats(0.25, 4.0))
def test_scaling_dot_similarities_is_scaling_the_temperature(shape, seed, temperature, c):
    """With dot similarity, scaling the queries by c is the same as dividing τ by c."""
    query, positive, negatives = _data(seed, *shape)
    options = EngineOptions(similarity=Similarity.DOT, temperatures=(temperature,))
    scaled = score_embeddings(query * np.float32(c), positive, negatives, options)
    options = EngineOptions(similarity=Similarity.DOT, temperatures=(temperature / c,))
    base = score_embeddings(query, positive, negatives, options)
    np.testing.assert_allclose(scaled.loss.numpy(), base.loss.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scaled.rank.numpy(), base.rank.numpy())


@settings(max_examples=20, deadline=None)
@given(shapes, seeds)
def test_ranks_do_not_depend_on_temperature(shape, seed):
    query, positive, negatives = _data(seed, *shape)
    out = [score_embeddings(query, positive, negatives, EngineOptions(temperatures=(t,))).rank
           for t in (0.01, 1.0)]
    np.testing.assert_array_equal(out[0].numpy(), out[1].numpy())


@settings(max_examples=30, deadline=None)
@given(shapes, seeds, st.integers(-90, 90), st.integers(-90, 90), st.integers(-90, 90),
       st.sampled_from(["in-batch", "paired", "pooled"]))
def test_cosine_is_unchanged_bit_for_bit_by_scaling_rows_by_powers_of_two(
        shape, seed, query_exponent, positive_exponent, negative_exponent, mode):
    """Rows scaled far beyond where their squares overflow or underflow float32 score
    exactly as the unscaled rows: scaling by a power of two loses no bit."""
    query, positive, negatives = _data(seed, *shape)
    negs = None if mode == "in-batch" else negatives
    options = EngineOptions(temperatures=(0.1,), in_batch=mode == "pooled")
    base = score_embeddings(query, positive, negs, options)
    scaled = score_embeddings(
        np.ldexp(query, query_exponent), np.ldexp(positive, positive_exponent),
        None if negs is None else np.ldexp(negs, negative_exponent), options)
    np.testing.assert_array_equal(scaled.loss.numpy(), base.loss.numpy())
    np.testing.assert_array_equal(scaled.positive_score.numpy(), base.positive_score.numpy())
    np.testing.assert_array_equal(scaled.rank.numpy(), base.rank.numpy())


@settings(max_examples=20, deadline=None)
@given(shapes, seeds, st.integers(-900, 900))
def test_float64_rows_beyond_float32_range_score_as_in_range_rows(shape, seed, exponent):
    """Float64 inputs scored in float32 are brought into range before the cast."""
    query, positive, negatives = _data(seed, *shape)
    options = EngineOptions(temperatures=(0.1,))
    base = score_embeddings(query, positive, negatives, options)
    wide = [np.ldexp(rows.astype(np.float64), exponent) for rows in (query, positive, negatives)]
    scaled = score_embeddings(*wide, options)
    np.testing.assert_array_equal(scaled.loss.numpy(), base.loss.numpy())
    np.testing.assert_array_equal(scaled.rank.numpy(), base.rank.numpy())
