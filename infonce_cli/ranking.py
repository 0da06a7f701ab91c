"""Exact full-corpus retrieval: the position of every relevant document of every query in
the ranking of the whole corpus, and the InfoNCE loss over the corpus, on the streaming
engine (queries × corpus blocks; no Q × D matrix is held).

Each (query, relevant document) pair is a row scored against the corpus as a shared pool
of candidates. Its own document is excluded from its candidates (it is the positive),
and with NT-Xent grouping the query's other positives too; the engine then counts the
candidates scoring at or above the document. Positions follow one total order per
query: score descending; at equal scores a non-relevant document comes first (ties count
against the relevant document, as in ``score``) and relevant documents among themselves
in corpus-row order. The counts of the excluded relevant documents are added back from
their own scores, so positions are exact whatever is excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .candidates import CandidateIds
from .engine import (
    EngineOptions,
    NegativeMode,
    PerSampleScores,
    Rows,
    plan_blocks,
    score_embeddings,
)
from .errors import InputError, arg
from .rows import RowReader
from .similarity import pairwise, prepare_rows, reduction_dtype
from .temperature import score_at_optimum

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Judged:
    """Relevant (query, document) pairs as rows of the query and corpus arrays: relevance
    ≥ 1, sorted by query row then document row, each pair once."""

    query_row: Array  # (P,) int64
    doc_row: Array  # (P,) int64
    relevance: Array  # (P,) int64 ≥ 1


@dataclass(frozen=True)
class RelevantScores:
    """Per relevant pair (in ``Judged`` order): its exact 1-based position in the query's
    ranking of the corpus, its score, and, for pairs whose relevance reaches the minimum
    for a positive, its InfoNCE loss (NaN for the others) and candidate count."""

    position: Array  # (P,) int64
    score: Array  # (P,) float64
    loss: Array  # (P,) float64
    num_candidates: Array  # (P,) int64
    positive: Array  # (P,) bool: relevance ≥ min_relevance
    scores: PerSampleScores
    """The engine's per-pair results (ranks among the candidates left, hardest negatives)."""
    top: tuple[Array, Array] | None = None
    """With ``top_k``: every query's best documents, (Q, k) scores and corpus rows, best
    first (equal scores by row)."""


def relevant_positions(
    query: Rows, corpus: Rows, judged: Judged, options: EngineOptions,
    min_relevance: int = 1, supcon: bool = False,
    on_rows_done: Callable[[int], None] | None = None, top_k: int = 0,
) -> RelevantScores:
    """Positions of the relevant documents in each query's ranking of the whole corpus, and
    the loss of each positive pair (NT-Xent: the query's other positives left out of its
    denominator; SupCon: kept in); with ``top_k``, each query's best documents, from the
    same pass (a query without a relevant document gets a pass of its own).

    Shapes: query (Q, d), corpus (D, d); ``options`` give the similarity, temperature (the
    first), dtype, device and memory budget (in-batch and symmetric do not apply).

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> docs = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    >>> judged = Judged(np.array([0, 1]), np.array([0, 1]), np.array([1, 2]))
    >>> out = relevant_positions(q, docs, judged, EngineOptions(temperatures=(1.0,)))
    >>> out.position.tolist()
    [2, 1]
    """
    positive = judged.relevance >= min_relevance
    rows_query, rows_doc, shared, ids = _pairs_against_corpus(query, corpus, judged, positive,
                                                              supcon, options)
    scores = score_embeddings(rows_query, rows_doc, corpus, replace(shared, top_k=top_k),
                              on_rows_done, ids)
    assert scores.mode is NegativeMode.SHARED
    score = scores.positive_score.detach().double().cpu().numpy()
    position = scores.rank.cpu().numpy().astype(np.int64) + _rank_corrections(
        judged, positive, score, supcon)
    loss = scores.loss[:, 0].detach().double().cpu().numpy()
    top = _query_tops(query, corpus, judged, (positive, score, scores), supcon, options,
                      top_k) if top_k else None
    return RelevantScores(position=position, score=score, loss=np.where(positive, loss, np.nan),
                          num_candidates=scores.num_candidates.cpu().numpy(),
                          positive=positive, scores=scores, top=top)


def _query_tops(
    query: Rows, corpus: Rows, judged: Judged,
    pairs: tuple[Array, Array, PerSampleScores], supcon: bool, options: EngineOptions,
    top_k: int,
) -> tuple[Array, Array]:
    """Every query's ``top_k`` documents: the best candidates its first pair row kept, with
    the documents that row excluded put back at their own scores; queries without a pair
    row are ranked by a pass of their own."""
    positive, score, scores = pairs
    assert scores.top_scores is not None
    assert scores.top_index is not None
    kept_scores = scores.top_scores.double().cpu().numpy()
    kept_rows = scores.top_index.cpu().numpy()
    k = min(top_k, int(corpus.shape[0]))
    best_scores = np.full((int(query.shape[0]), k), -np.inf)
    best_rows = np.full((int(query.shape[0]), k), -1, dtype=np.int64)
    starts, ends = _query_runs(judged.query_row)
    for start, end in zip(starts, ends, strict=True):
        excluded = np.arange(start, end) == start
        if not supcon:
            excluded |= positive[start:end]
        found = np.isfinite(kept_scores[start])
        candidates = np.r_[kept_scores[start][found], score[start:end][excluded]]
        rows = np.r_[kept_rows[start][found], judged.doc_row[start:end][excluded]]
        order = np.lexsort((rows, -candidates))[:k]
        best_scores[judged.query_row[start], :len(order)] = candidates[order]
        best_rows[judged.query_row[start], :len(order)] = rows[order]
    alone = np.setdiff1d(np.arange(int(query.shape[0])), judged.query_row)
    if alone.size:
        best_scores[alone], best_rows[alone] = top_documents(gather_rows(query, alone), corpus,
                                                             options, k)
    return best_scores, best_rows


def fit_retrieval_temperature(
    query: Rows, corpus: Rows, judged: Judged, options: EngineOptions,
    min_relevance: int = 1, supcon: bool = False,
    on_rows_done: Callable[[int], None] | None = None,
) -> float:
    """The temperature that minimises the mean loss of the positive pairs over the corpus,
    fitted as a sweep fits it (default grid, exact optimum); an ``InfonceError`` when there
    is no finite optimum."""
    positive = judged.relevance >= min_relevance
    kept = Judged(judged.query_row[positive], judged.doc_row[positive],
                  judged.relevance[positive])
    rows_query, rows_doc, shared, ids = _pairs_against_corpus(
        query, corpus, kept, np.ones(len(kept.query_row), dtype=bool), supcon, options)
    temperature, _ = score_at_optimum(rows_query, rows_doc, corpus, shared, on_rows_done, ids)
    return temperature


def _pairs_against_corpus(
    query: Rows, corpus: Rows, judged: Judged, positive: Array, supcon: bool,
    options: EngineOptions,
) -> tuple[Array, Array, EngineOptions, CandidateIds]:
    """A row per pair (its query and its document, gathered), the options that score them
    against the corpus as a shared pool, and the candidates each pair excludes."""
    excluded = _exclusions(judged, positive, supcon)
    device = options.device
    ids = CandidateIds(excluded=(torch.from_numpy(excluded[0]).to(device),
                                 torch.from_numpy(excluded[1]).to(device)),
                       row_query=torch.from_numpy(judged.query_row.astype(np.int64)).to(device))
    shared = replace(options, in_batch=False, symmetric=False, batch_size=None,
                     mask_duplicates=False, query_rows=None)
    return gather_rows(query, judged.query_row), gather_rows(corpus, judged.doc_row), shared, ids


def gather_rows(source: Rows, rows: Array) -> Array:
    """Rows ``rows`` (any order, repeats allowed) of an array or a file reader, read as
    contiguous runs of the distinct rows they touch."""
    wanted = np.unique(rows)
    if wanted.size == 0:
        return np.empty((0, int(source.shape[-1])), dtype=np.float32)
    breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
    parts = [np.asarray(source[int(run[0]):int(run[-1]) + 1])
             for run in np.split(wanted, breaks)]
    block = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(block[np.searchsorted(wanted, rows)])


def _exclusions(judged: Judged, positive: Array, supcon: bool) -> tuple[Array, Array]:
    """(pair row, corpus row) of each candidate that is not a negative of the pair: its own
    document, and with NT-Xent grouping every positive of its query. Sorted by pair row."""
    pairs = np.arange(len(judged.query_row))
    if supcon:
        return pairs, judged.doc_row.astype(np.int64)
    starts, ends = _query_runs(judged.query_row)
    rows: list[Array] = []
    columns: list[Array] = []
    for start, end in zip(starts, ends, strict=True):
        members = pairs[start:end]
        docs = judged.doc_row[start:end]
        group = np.union1d(docs[positive[start:end]], np.array([], dtype=np.int64))
        for pair, doc in zip(members, docs, strict=True):
            excluded = group if doc in group else np.union1d(group, [doc])
            rows.append(np.full(len(excluded), pair, dtype=np.int64))
            columns.append(excluded.astype(np.int64))
    return np.concatenate(rows), np.concatenate(columns)


def _query_runs(query_row: Array) -> tuple[Array, Array]:
    """Start and end of each query's run of pairs (pairs are sorted by query)."""
    starts = np.flatnonzero(np.r_[True, query_row[1:] != query_row[:-1]])
    return starts, np.r_[starts[1:], len(query_row)]


def _rank_corrections(judged: Judged, positive: Array, score: Array, supcon: bool) -> Array:
    """What turns the engine's rank (1 + candidates scoring at or above the document) into
    the position in the total order: relevant documents tied with the document count only
    when they come first in corpus order, and excluded positives count when they score
    above it (or tie and come first)."""
    correction = np.zeros(len(score), dtype=np.int64)
    starts, ends = _query_runs(judged.query_row)
    for start, end in zip(starts, ends, strict=True):
        if end - start == 1:
            continue
        s = score[start:end]
        row = judged.doc_row[start:end]
        excluded_other = (np.ones(end - start, dtype=bool) if supcon
                          else positive[start:end])
        # [i, j]: document j is another relevant document of document i's query.
        other = ~np.eye(end - start, dtype=bool)
        tied = (s[None, :] == s[:, None]) & other
        before = (s[None, :] > s[:, None]) | (tied & (row[None, :] < row[:, None]))
        if supcon:
            # Every other relevant document was a candidate: a tie counted against the
            # document whatever the corpus order; keep only those that come first.
            correction[start:end] -= (tied & (row[None, :] > row[:, None])).sum(axis=1)
            continue
        counted = ~excluded_other[None, :] & other  # relevant, but a candidate
        correction[start:end] -= (tied & counted & (row[None, :] > row[:, None])).sum(axis=1)
        correction[start:end] += (before & excluded_other[None, :]).sum(axis=1)
    return correction


def top_documents(
    query: Rows, corpus: Rows, options: EngineOptions, k: int,
    on_rows_done: Callable[[int], None] | None = None,
) -> tuple[Array, Array]:
    """The ``k`` best-scoring corpus rows of every query and their scores, best first (equal
    scores by corpus row), from one streamed pass: each corpus block's ``topk`` is merged
    with the running one, so no Q × D matrix is held.

    Shapes: query (Q, d), corpus (D, d) → scores (Q, k') float64 and rows (Q, k') int64,
    k' = min(k, D).

    >>> q = np.array([[1.0, 0.0]], dtype=np.float32)
    >>> docs = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    >>> scores, rows = top_documents(q, docs, EngineOptions(), 2)
    >>> rows.tolist(), scores.round(4).tolist()
    ([[1, 2]], [[1.0, 0.7071]])
    """
    reader = RowReader(options.similarity, options.dtype, options.device)
    n, total = int(query.shape[0]), int(corpus.shape[0])
    k = min(k, total)
    plan = plan_blocks(n, int(query.shape[-1]), NegativeMode.SHARED, 0,
                       options.device.type, options.max_memory, None)
    candidate_block = max(plan.candidate_block, k)
    dtype = reduction_dtype(options.dtype)
    best_scores = np.empty((n, k))
    best_rows = np.empty((n, k), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, n, plan.query_block):
            stop = min(start + plan.query_block, n)
            queries = prepare_rows(reader.raw(query, start, stop), options.similarity)
            scores = torch.empty((stop - start, 0), dtype=dtype, device=options.device)
            rows = torch.empty((stop - start, 0), dtype=torch.int64, device=options.device)
            for first in range(0, total, candidate_block):
                last = min(first + candidate_block, total)
                block = pairwise(queries, reader.block(corpus, first, last).prepared,
                                 options.similarity).to(dtype)
                columns = torch.arange(first, last, device=options.device).expand_as(block)
                scores, picked = torch.cat([scores, block], dim=1).topk(
                    min(k, scores.shape[1] + block.shape[1]), dim=1)
                rows = torch.cat([rows, columns], dim=1).gather(1, picked)
            found_scores = scores.double().cpu().numpy()
            found_rows = rows.cpu().numpy()
            order = np.lexsort((found_rows, -found_scores), axis=1)
            best_scores[start:stop] = np.take_along_axis(found_scores, order, axis=1)
            best_rows[start:stop] = np.take_along_axis(found_rows, order, axis=1)
            if on_rows_done is not None:
                on_rows_done(stop - start)
    return best_scores, best_rows


@dataclass(frozen=True)
class MatchedQrels:
    """Qrels matched to the rows of the query and corpus inputs."""

    judged: Judged
    """Judgements with relevance ≥ 1 whose query and document are both in the inputs."""
    evaluated: Array
    """Query rows with at least one relevant judgement, in order."""
    ideal: tuple[Array, Array]
    """(query row, relevance) of every relevant judgement of those queries, including
    documents missing from the corpus (``ignore_unknown``): they count in R and in the
    ideal DCG, as ranx and trec_eval count them, and are never retrieved."""
    without_relevant: int
    """Judged queries whose judgements name no relevant document (left out, as they would
    measure the qrels rather than the model)."""
    unknown: int
    """Judgements naming an id missing from the inputs (``ignore_unknown``)."""
    judgements: int


def match_qrels(qrels: Any, query_ids: Array, corpus_ids: Array,
                ignore_unknown: bool = False) -> MatchedQrels:
    """Qrels (``io.Qrels``) as rows of the inputs. A judgement naming a query or document
    that is not there is an error naming the qrels line, unless ``ignore_unknown``: then a
    judgement of an unknown query is dropped, and a relevant document missing from the
    corpus still counts as relevant (never retrieved).

    >>> from types import SimpleNamespace
    >>> qrels = SimpleNamespace(query_ids=np.array(["b", "a", "a"]),
    ...                         doc_ids=np.array(["d2", "d1", "d2"]),
    ...                         relevance=np.array([0, 1, 2]))
    >>> matched = match_qrels(qrels, np.array(["a", "b"]), np.array(["d1", "d2"]))
    >>> matched.judged.query_row.tolist(), matched.judged.doc_row.tolist()
    ([0, 0], [0, 1])
    >>> matched.without_relevant, matched.evaluated.tolist()
    (1, [0])
    """
    query_row = _rows_of(np.asarray(qrels.query_ids).astype(str), query_ids)
    doc_row = _rows_of(np.asarray(qrels.doc_ids).astype(str), corpus_ids)
    known = (query_row >= 0) & (doc_row >= 0)
    if not known.all() and not ignore_unknown:
        first = int(np.argmax(~known))
        kind, name = (("query", qrels.query_ids[first]) if query_row[first] < 0
                      else ("document", qrels.doc_ids[first]))
        raise InputError(f"{qrels.where(first)}: unknown {kind} id {str(name)!r}, not among "
                         f"the {kind} ids of the inputs; set {arg('ignore_unknown')} to drop "
                         "such judgements")
    relevance = np.asarray(qrels.relevance, dtype=np.int64)
    judged_queries = np.unique(query_row[query_row >= 0])
    relevant = (query_row >= 0) & (relevance >= 1)
    ranked = relevant & (doc_row >= 0)
    order = np.lexsort((doc_row[ranked], query_row[ranked]))
    judged = Judged(query_row[ranked][order].astype(np.int64),
                    doc_row[ranked][order].astype(np.int64), relevance[ranked][order])
    evaluated = np.unique(query_row[relevant])
    return MatchedQrels(judged, evaluated,
                        (query_row[relevant].astype(np.int64), relevance[relevant]),
                        len(judged_queries) - len(evaluated), int((~known).sum()),
                        len(relevance))


def _rows_of(names: Array, ids: Array) -> Array:
    """The row of each name among ``ids`` (unique), −1 where it is not there."""
    order = np.argsort(ids, kind="stable")
    at = np.searchsorted(ids, names, sorter=order).clip(max=len(ids) - 1)
    rows = order[at]
    return np.where(ids[rows] == names, rows, -1)
