"""Ranks with hand-worked ties, and the retrieval metrics built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infonce_cli.engine import EngineOptions, score_embeddings
from infonce_cli.metrics import loss_stats, mi_lower_bound, percentiles, retrieval_metrics
from infonce_cli.similarity import Similarity


def _score(query, positive, negatives=None, similarity="cosine", **kwargs):
    options = EngineOptions(temperatures=(1.0,), similarity=Similarity(similarity), **kwargs)
    return score_embeddings(np.asarray(query, np.float32), np.asarray(positive, np.float32),
                            None if negatives is None else np.asarray(negatives, np.float32),
                            options)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "l2"])
def test_a_different_negative_with_an_equal_score_counts_against_the_positive(similarity):
    # dot: q·p = q·n = 1; cosine: both at 45°; l2: both at squared distance 1.
    out = _score([[1.0, 0.0]], [[1.0, 1.0]], [[[1.0, -1.0], [-1.0, 0.0]]], similarity)
    assert out.rank.tolist() == [2]
    assert out.hardest_negative_index.tolist() == [0]
    assert out.hardest_negative_score.item() == out.positive_score.item()


def test_equal_similarities_give_log_of_the_candidate_count():
    out = _score([[1.0, 0.0]], [[0.0, 1.0]], [[0.0, -1.0], [0.0, 2.0], [0.0, 3.0]])
    assert out.loss[0, 0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert out.rank.tolist() == [4]
    assert out.num_candidates.tolist() == [4]


@pytest.mark.parametrize("similarity", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("mode", ["shared", "paired"])
def test_a_copy_of_the_positive_among_the_negatives_ties_with_it(real_data, similarity, mode):
    """Inserting a bit-identical copy of each positive raises every rank by exactly one,
    however the matrix product rounds (real vectors, d = 384)."""
    rows = slice(0, 400)
    query, positive = real_data["query"][rows], real_data["positive"][rows]
    if mode == "shared":
        pool = real_data["shared"][:300]
        with_copies = np.concatenate([pool[:150], positive, pool[150:]])
        options = {"max_memory": 2**20}
    else:
        pool = real_data["paired"][rows]
        with_copies = np.concatenate([pool[:, :3], positive[:, None], pool[:, 3:]], axis=1)
        options = {}
    before = _score(query, positive, pool, similarity, **options)
    after = _score(query, positive, with_copies, similarity, **options)
    if mode == "shared":
        # Each query's own copy ties; the other queries' positives may rank anywhere.
        copies = _score(query, positive, positive, similarity, **options)
        expected = before.rank + copies.rank - 1
    else:
        expected = before.rank + 1
    np.testing.assert_array_equal(after.rank.numpy(), expected.numpy())
    assert (after.hardest_negative_score >= after.positive_score).all()


def test_in_batch_duplicate_positives_tie():
    query = [[1.0, 0.2], [0.3, 1.0], [-1.0, 0.0]]
    positive = [[1.0, 0.1], [1.0, 0.1], [-1.0, 0.5]]
    out = _score(query, positive)
    # Rows 0 and 1 share a positive: each ties with the other's copy; row 2 is clear.
    assert out.rank.tolist() == [2, 2, 1]
    assert out.hardest_negative_index.tolist()[:2] == [1, 0]


def test_retrieval_metrics_by_hand():
    ranks = np.array([1, 1, 2, 3, 11])
    m = retrieval_metrics(ranks, recall_at=(1, 3, 10))
    assert m.accuracy_at_1 == pytest.approx(0.4)
    assert m.recall_at == {1: pytest.approx(0.4), 3: pytest.approx(0.8), 10: pytest.approx(0.8)}
    assert m.mrr == pytest.approx((1 + 1 + 1 / 2 + 1 / 3 + 1 / 11) / 5)
    assert m.ndcg_at_10 == pytest.approx((1 + 1 + 1 / math.log2(3) + 1 / math.log2(4)) / 5)
    assert (m.mean_rank, m.median_rank) == (pytest.approx(3.6), 2.0)


def test_loss_stats_use_population_std_and_linear_percentiles():
    values = np.arange(1.0, 21.0)
    stats = loss_stats(values)
    assert stats.std == pytest.approx(np.sqrt(((values - 10.5) ** 2).mean()))
    assert stats.p05 == pytest.approx(1.95)
    assert stats.p95 == pytest.approx(19.05)
    assert (stats.min, stats.max, stats.median) == (1.0, 20.0, 10.5)


def test_mi_bound_never_exceeds_its_ceiling(real_data):
    out = _score(real_data["query"][:200], real_data["positive"][:200])
    bound, ceiling = mi_lower_bound(out.loss[:, 0].numpy(), out.num_candidates.numpy())
    assert 0 < bound <= ceiling == pytest.approx(math.log(200))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_numpys_bit_for_bit(values):
    data = np.array(values)
    expected = [float(v) for v in np.percentile(data, [5, 50, 95])]
    assert percentiles(data, (5, 50, 95)) == expected
