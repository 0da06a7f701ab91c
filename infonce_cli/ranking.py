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
from .corpus_scan import CorpusScan, QueryPairs, scan_corpus
from .engine import EngineOptions, NegativeMode, PerSampleScores, Rows
from .errors import InputError, arg
from .rows import gather_rows
from .similarity import paired, prepare_rows
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
    """Per-pair results as the engine gives them (ranks among the candidates left, the
    loss, hardest negatives) for the positive pairs; a relevant pair below the minimum
    relevance has its rank and candidate count, and its query's loss terms otherwise."""
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
    denominator; SupCon: kept in); with ``top_k``, every query's best documents, from the
    same pass (``corpus_scan``: one product per query and corpus block).

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
    device = options.device
    pairs = QueryPairs(torch.from_numpy(judged.query_row.astype(np.int64)).to(device),
                       torch.from_numpy(judged.doc_row.astype(np.int64)).to(device),
                       torch.from_numpy(positive).to(device))
    documents = int(corpus.shape[0])
    top_k = min(top_k, documents)
    # In half precision the lists are chosen among more candidates, then rescored in float32.
    half = options.dtype in (torch.bfloat16, torch.float16)
    kept = min(documents, max(2 * top_k, top_k + 32)) if half and top_k else top_k
    queries = np.arange(int(query.shape[0])) if top_k else np.unique(judged.query_row)
    scan = scan_corpus(query, corpus, queries, pairs, options, kept, on_rows_done)
    scores = _pair_scores(scan, judged, positive, supcon, options.temperatures[0], documents)
    score = scores.positive_score.double().numpy()
    position = scores.rank.numpy() + _rank_corrections(judged, positive, score, supcon)
    loss = scores.loss[:, 0].double().numpy()
    top = None
    if top_k:
        top = _rescored(query, corpus, scan, options, top_k) if half else _best_first(scan)
    return RelevantScores(position=position, score=score, loss=np.where(positive, loss, np.nan),
                          num_candidates=scores.num_candidates.numpy(), positive=positive,
                          scores=scores, top=top)


def _pair_scores(scan: CorpusScan, judged: Judged, positive: Array, supcon: bool,
                 temperature: float, documents: int) -> PerSampleScores:
    """Each pair's results as the engine gives them for a row scored against the corpus
    with its exclusions (NT-Xent: every positive of its query and its own document;
    SupCon: its own document): the loss, the hardest candidate, the rank among the
    candidates left (1 + those at or above it), from its query's scan and the scores of
    the query's other relevant documents."""
    scale = 1.0 / temperature
    at = np.searchsorted(scan.queries, judged.query_row)
    log_sum_exp = scan.log_sum_exp.double().cpu().numpy()[at]
    hardest = scan.negative_max.double().cpu().numpy()[at]
    hardest_row = scan.negative_row.cpu().numpy()[at]
    x = scan.pair_score.double().cpu().numpy()
    rank = 1 + scan.at_or_above.cpu().numpy() - ~positive  # a relevant negative met itself
    positives_of_query = np.bincount(judged.query_row[positive],
                                     minlength=int(judged.query_row.max(initial=-1)) + 1)
    candidates = 1 + documents - positives_of_query[judged.query_row] - ~positive
    if supcon:  # the query's other positives are candidates too
        candidates = np.full(len(x), documents)
        starts, ends = _query_runs(judged.query_row)
        for begin, end in zip(starts, ends, strict=True):
            if end - begin == 1:  # no other relevant document
                continue
            members = np.arange(begin, end)
            others = members[positive[begin:end]]
            for i in members:
                rest = others[others != i]
                if not len(rest):
                    continue
                log_sum_exp[i] = np.logaddexp(log_sum_exp[i],
                                              np.logaddexp.reduce(x[rest] * scale))
                rank[i] += int((x[rest] >= x[i]).sum())
                best = rest[np.argmax(x[rest])]
                # Equal scores: the lower corpus row, as the engine's first maximum.
                if (x[best], -judged.doc_row[best]) > (hardest[i], -hardest_row[i]):
                    hardest[i], hardest_row[i] = x[best], judged.doc_row[best]
    loss = np.logaddexp(x * scale, log_sum_exp) - x * scale
    return PerSampleScores(
        loss=torch.from_numpy(loss[:, None]), positive_score=torch.from_numpy(x),
        hardest_negative_score=torch.from_numpy(hardest),
        hardest_negative_index=torch.from_numpy(hardest_row),
        rank=torch.from_numpy(rank.astype(np.int64)),
        num_candidates=torch.from_numpy(candidates.astype(np.int64)),
        masked=torch.zeros(len(x), dtype=torch.int64), mode=NegativeMode.SHARED,
        positive_unbeaten=torch.from_numpy(hardest <= x))


def _best_first(scan: CorpusScan) -> tuple[Array, Array]:
    """Every query's top-k documents, best first, equal scores by corpus row."""
    assert scan.top_scores is not None
    assert scan.top_rows is not None
    return _ordered(scan.top_scores.double().cpu().numpy(), scan.top_rows.cpu().numpy())


def _ordered(scores: Array, rows: Array) -> tuple[Array, Array]:
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _rescored(query: Rows, corpus: Rows, scan: CorpusScan, options: EngineOptions,
              k: int) -> tuple[Array, Array]:
    """The ``k`` best of each query's half-precision candidates, rescored in float32 on the
    run's device (as many queries at a time as a quarter of the memory budget holds: their
    candidates' rows and the row-wise products), best first."""
    assert scan.top_rows is not None
    rows = scan.top_rows.cpu().numpy()
    similarity, device = options.similarity, options.device
    kept, dim = rows.shape[1], int(query.shape[-1])
    chunk = max(1, options.max_memory // 4 // (2 * 4 * kept * dim))
    best_scores = np.empty((len(rows), k))
    best_rows = np.empty((len(rows), k), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        queries = prepare_rows(torch.from_numpy(gather_rows(query, scan.queries[
            start:start + chunk]).astype(np.float32)).to(device), similarity)
        documents = torch.from_numpy(gather_rows(corpus, np.maximum(block, 0).ravel()).astype(
            np.float32)).to(device).reshape(*block.shape, dim)
        scores = paired(queries, documents, similarity).double().cpu().numpy()
        scores[block < 0] = -np.inf
        ordered_scores, ordered_rows = _ordered(scores, block)
        best_scores[start:start + len(block)] = ordered_scores[:, :k]
        best_rows[start:start + len(block)] = ordered_rows[:, :k]
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
