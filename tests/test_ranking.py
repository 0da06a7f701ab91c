"""Exact positions of relevant documents in the ranking of a whole corpus, and the loss over
the corpus, against a brute-force float64 argsort and loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infonce_cli.engine import EngineOptions
from infonce_cli.ranking import Judged, relevant_positions
from infonce_cli.similarity import Similarity

Q, D, DIM = 30, 400, 16


def _data(rng, duplicates: bool, queries: int = Q, documents: int = D, dim: int = DIM):
    query = rng.normal(size=(queries, dim)).astype(np.float32)
    corpus = rng.normal(size=(documents, dim)).astype(np.float32)
    pairs = {}
    for q in range(queries):
        for doc in rng.choice(documents, size=int(rng.integers(1, 5)), replace=False):
            pairs[(q, int(doc))] = int(rng.integers(1, 4))
        corpus[next(iter(d for (qq, d) in pairs if qq == q))] = query[q] + rng.normal(
            scale=0.5, size=dim)
    if duplicates:
        # Bit-identical copies: of relevant documents (relevant and not), and of others.
        for q in range(0, queries, 3):
            docs = [d for (qq, d) in pairs if qq == q]
            corpus[(docs[0] + 7) % documents] = corpus[docs[0]]
            if len(docs) > 1:
                corpus[docs[1]] = corpus[docs[0]]
    keys = sorted(pairs)
    judged = Judged(np.array([k[0] for k in keys]), np.array([k[1] for k in keys]),
                    np.array([pairs[k] for k in keys]))
    return query, corpus, judged


def _cosine(query, corpus):
    q = query.astype(np.float64)
    c = corpus.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return _dot(q, c)


def _dot(query, corpus):
    """Every product summed the same way, so that copies of a document tie exactly (a
    matrix product may round equal columns differently)."""
    return (query.astype(np.float64)[:, None, :] * corpus.astype(np.float64)[None]).sum(-1)


def _reference_positions(scores, judged):
    """Position of each relevant document in the total order: score descending, then
    non-relevant before relevant, then corpus row."""
    out = []
    for q, doc in zip(judged.query_row, judged.doc_row, strict=True):
        relevant = np.zeros(scores.shape[1], dtype=bool)
        relevant[judged.doc_row[judged.query_row == q]] = True
        order = np.lexsort((np.arange(scores.shape[1]), relevant, -scores[q]))
        out.append(int(np.flatnonzero(order == doc)[0]) + 1)
    return np.array(out)


def _reference_loss(scores, judged, temperature, min_relevance, supcon):
    losses = []
    for q, doc, rel in zip(judged.query_row, judged.doc_row, judged.relevance, strict=True):
        if rel < min_relevance:
            losses.append(math.nan)
            continue
        positives = judged.doc_row[(judged.query_row == q) & (judged.relevance >= min_relevance)]
        keep = np.ones(scores.shape[1], dtype=bool)
        if not supcon:
            keep[positives] = False
            keep[doc] = True
        logits = scores[q, keep] / temperature
        top = logits.max()
        losses.append(top + math.log(np.exp(logits - top).sum()) - scores[q, doc] / temperature)
    return np.array(losses)


@pytest.mark.parametrize("duplicates", [False, True])
@pytest.mark.parametrize("supcon", [False, True])
@pytest.mark.parametrize("min_relevance", [1, 2])
def test_positions_and_losses_match_brute_force(duplicates, supcon, min_relevance):
    rng = np.random.default_rng(11)
    query, corpus, judged = _data(rng, duplicates)
    options = EngineOptions(temperatures=(0.1,), max_memory=2**20)
    out = relevant_positions(query, corpus, judged, options, min_relevance=min_relevance,
                             supcon=supcon)
    scores = _cosine(query, corpus)
    tied = [(scores[q] == scores[q, d]).sum() - 1 for q, d in zip(judged.query_row,
                                                                  judged.doc_row, strict=True)]
    assert (sum(tied) > 10) == duplicates  # copies of relevant documents tie exactly
    np.testing.assert_array_equal(out.position, _reference_positions(scores, judged))
    want = _reference_loss(scores, judged, 0.1, min_relevance, supcon)
    np.testing.assert_allclose(out.loss, want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(out.positive, judged.relevance >= min_relevance)
    # Positions are a total order: distinct within each query.
    for q in np.unique(judged.query_row):
        mine = out.position[judged.query_row == q]
        assert len(set(mine.tolist())) == len(mine)


@pytest.mark.parametrize(("similarity", "temperature"),
                         [("cosine", 0.1), ("cosine", 0.01), ("dot", 0.5)])
def test_many_query_blocks_in_several_groups_match_brute_force(similarity, temperature):
    """Several blocks of queries in each of several groups, each corpus block searched
    once per group for the copies of the group's relevant documents: the same positions
    and losses as a float64 brute force, whether the exponents need clamping (small τ,
    dot products) or not."""
    from infonce_cli.corpus_scan import _groups
    from infonce_cli.engine import NegativeMode, plan_blocks

    rng = np.random.default_rng(21)
    query, corpus, judged = _data(rng, True, queries=300, documents=500, dim=4)
    options = EngineOptions(temperatures=(temperature,), similarity=Similarity(similarity),
                            max_memory=2**15)
    plan = plan_blocks(300, 4, NegativeMode.SHARED, 0, "cpu", options.max_memory, None)
    rows = torch.arange(300)
    bounds = torch.searchsorted(torch.from_numpy(judged.query_row),
                                torch.stack([rows, rows + 1]))
    groups = list(_groups(bounds, plan.query_block, 4 * 4, options.max_memory // 2))
    assert len(groups) > 1
    assert max(len(group) for group in groups) > 2
    out = relevant_positions(query, corpus, judged, options)
    scores = (_cosine if similarity == "cosine" else _dot)(query, corpus)
    np.testing.assert_array_equal(out.position, _reference_positions(scores, judged))
    want = _reference_loss(scores, judged, temperature, 1, False)
    np.testing.assert_allclose(out.loss, want, rtol=1e-5, atol=1e-4)


def test_positions_do_not_depend_on_block_sizes_or_the_reader():
    rng = np.random.default_rng(5)
    query, corpus, judged = _data(rng, True)
    small = relevant_positions(query, corpus, judged,
                               EngineOptions(temperatures=(0.05,), max_memory=2**20))
    large = relevant_positions(query, corpus, judged,
                               EngineOptions(temperatures=(0.05,), max_memory=2**30))
    np.testing.assert_array_equal(small.position, large.position)
    np.testing.assert_allclose(small.loss, large.loss, rtol=1e-6)


@pytest.mark.parametrize("max_memory", [2**20, 2**30])
def test_top_documents_match_a_float64_argsort(max_memory):
    """The top-k lists of every query, those without a relevant document included, are a
    float64 argsort's, from the same pass as the positions."""
    rng = np.random.default_rng(3)
    query, corpus, judged = _data(rng, duplicates=False)
    alone = judged.query_row != 0  # query 0 has no relevant document
    judged = Judged(judged.query_row[alone], judged.doc_row[alone], judged.relevance[alone])
    out = relevant_positions(query, corpus, judged, EngineOptions(max_memory=max_memory),
                             top_k=25)
    scores, rows = out.top
    reference = _cosine(query, corpus)
    want = np.argsort(-reference, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, want, axis=1), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("supcon", [False, True])
@pytest.mark.parametrize("min_relevance", [1, 2])
@pytest.mark.parametrize("max_memory", [2**14, 2**20])
def test_the_scan_per_query_gives_the_engines_results_per_pair(supcon, min_relevance,
                                                              max_memory):
    """The corpus scan folds each query once; the generic engine, each pair as a row with
    its exclusions. They agree on the rank, the candidates, the loss and the hardest
    negative of every pair (ties between copies going to the first row), with corpus
    blocks of one group of columns and of several."""
    from infonce_cli.engine import score_embeddings
    from infonce_cli.ranking import _exclusions, _pairs_against_corpus

    rng = np.random.default_rng(8)
    query, corpus, judged = _data(rng, True)
    # 2**14: many corpus blocks (rescaling across blocks); 2**20: one, of several groups.
    options = EngineOptions(temperatures=(0.1,), max_memory=max_memory)
    positive = judged.relevance >= min_relevance
    scanned = relevant_positions(query, corpus, judged, options, min_relevance, supcon).scores
    rows_query, rows_doc, shared, ids = _pairs_against_corpus(query, corpus, judged, positive,
                                                              supcon, options)
    assert _exclusions(judged, positive, supcon)[0].size
    engine = score_embeddings(rows_query, rows_doc, corpus, shared, ids=ids)
    keep = positive  # the loss and hardest negative are those of positive pairs
    np.testing.assert_array_equal(scanned.rank, engine.rank)
    np.testing.assert_array_equal(scanned.num_candidates, engine.num_candidates)
    np.testing.assert_allclose(scanned.loss[keep, 0], engine.loss[keep, 0].double(),
                               rtol=1e-5)
    np.testing.assert_allclose(scanned.hardest_negative_score[keep],
                               engine.hardest_negative_score[keep].double(), rtol=1e-6)
    np.testing.assert_array_equal(scanned.hardest_negative_index[keep],
                                  engine.hardest_negative_index[keep])


@pytest.mark.parametrize("supcon", [False, True])
def test_top_documents_from_the_same_pass_match_a_float64_argsort(supcon):
    rng = np.random.default_rng(13)
    query, corpus, judged = _data(rng, duplicates=False)
    # Some queries without any relevant document take a pass of their own.
    keep = judged.query_row % 5 != 0
    judged = Judged(judged.query_row[keep], judged.doc_row[keep], judged.relevance[keep])
    out = relevant_positions(query, corpus, judged,
                             EngineOptions(temperatures=(0.1,), max_memory=2**20),
                             supcon=supcon, top_k=20)
    assert out.top is not None
    scores, rows = out.top
    reference = _cosine(query, corpus)
    want = np.argsort(-reference, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, want, axis=1), atol=1e-6)


def test_groups_of_queries_that_fit_the_budget_change_nothing():
    """With a budget too small for every query's rows at once, the queries are scanned in
    groups (the corpus read once per group): the same positions, losses and top lists,
    and the progress still counts every pair once."""
    from infonce_cli.corpus_scan import _groups

    rng = np.random.default_rng(4)
    query = rng.normal(size=(300, 8)).astype(np.float32)
    corpus = rng.normal(size=(2000, 8)).astype(np.float32)
    docs = rng.choice(2000, size=600, replace=False)
    owner = np.sort(rng.integers(0, 300, size=600))
    order = np.lexsort((docs, owner))
    judged = Judged(owner[order], docs[order], rng.integers(1, 3, size=600))
    small, large = EngineOptions(max_memory=2**14), EngineOptions(max_memory=2**30)
    rows = torch.arange(300)
    bounds = torch.searchsorted(torch.from_numpy(judged.query_row),
                                torch.stack([rows, rows + 1]))
    assert len(list(_groups(bounds, 64, 8 * 4, small.max_memory // 2))) > 2
    done = []
    apart = relevant_positions(query, corpus, judged, small, on_rows_done=done.append,
                               top_k=7)
    whole = relevant_positions(query, corpus, judged, large, top_k=7)
    assert sum(done) == len(judged.query_row)
    np.testing.assert_array_equal(apart.position, whole.position)
    np.testing.assert_allclose(apart.loss, whole.loss, rtol=1e-6)
    np.testing.assert_array_equal(apart.top[1], whole.top[1])


@pytest.mark.parametrize("width", [7, 64, 300])
def test_top_lists_break_ties_by_index_whatever_the_blocks(width):
    """Scores tying across the k-th place: the list keeps the lowest indices, in order,
    for every block width; rows with fewer than k finite scores are padded with -1."""
    from infonce_cli.accumulators import TopK

    rng = np.random.default_rng(2)
    scores = torch.full((3, 300), 0.5)
    scores[0, 5] = 0.9
    scores[1] = torch.from_numpy(rng.permutation(300) / 300.0)
    scores[2, 4:] = -math.inf
    top = TopK(10, scores)
    for first in range(0, 300, width):
        top.update(scores[:, first:first + width], first)
    assert top.index[0].tolist() == [5, 0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert top.index[1].tolist() == torch.argsort(-scores[1], stable=True)[:10].tolist()
    assert top.index[2].tolist() == [0, 1, 2, 3] + [-1] * 6


@pytest.mark.parametrize(("k", "width", "seed"), [(1, 64, 0), (10, 100, 1), (10, 2560, 2),
                                               (25, 130, 3), (70, 64, 4), (70, 1000, 5)])
def test_top_lists_equal_a_stable_sort_of_the_whole_rows(k, width, seed):
    """Scores from a few values (ties everywhere) with −inf entries, in blocks of any
    width: each list is the row's k best by a stable sort, −1 past its finite scores, when
    read halfway (of the columns so far) as at the end."""
    from infonce_cli.accumulators import TopK

    def best(seen):
        want = torch.argsort(-seen, dim=1, stable=True)[:, :k]
        return torch.where(torch.isfinite(seen.gather(1, want)), want, -1)

    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.integers(0, 40, size=(33, 3000)).astype(np.float32))
    scores[rng.random(scores.shape) < 0.2] = -math.inf
    scores[5, 7:] = -math.inf  # a row with fewer than k candidates
    top = TopK(k, scores)
    halfway = width * max(1, scores.shape[1] // width // 2)
    for first in range(0, scores.shape[1], width):
        if first == halfway:
            assert torch.equal(top.index, best(scores[:, :halfway]))
        top.update(scores[:, first:first + width], first)
    assert torch.equal(top.index, best(scores))


def test_duplicates_at_the_kth_place_keep_the_first_rows_in_bfloat16_too():
    """300 bit-identical copies of a document: the top-10 list is the copies with the
    lowest rows, in float32 and, rescored, in bfloat16, whatever the budget."""
    rng = np.random.default_rng(6)
    query = rng.normal(size=(2, 8)).astype(np.float32)
    corpus = rng.normal(size=(1000, 8)).astype(np.float32)
    corpus[100:400] = query[0]
    judged = Judged(np.array([0]), np.array([7]), np.array([1]))
    want = list(range(100, 110))
    for dtype, budget in ((torch.float32, 2**30), (torch.bfloat16, 2**12),
                          (torch.float32, 2**12)):
        out = relevant_positions(query, corpus, judged,
                                 EngineOptions(dtype=dtype, max_memory=budget), top_k=10)
        assert out.top[1][0].tolist() == want, dtype
