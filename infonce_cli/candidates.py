"""Candidate sources: where each query's negatives come from, one class per negative mode.

A source scores a block of queries against its candidates, one block of candidates at a
time, and marks the entries that are not negatives: a query's own positive among the
in-batch positives, and false negatives (same key as the query's positive, another row
of its group, or, when asked, a copy of its positive). A candidate bit-identical to the
query's positive otherwise carries exactly the positive's score, so that it ties with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from .rows import Positives, RowBlock, RowReader, Rows
from .similarity import paired, pairwise


@dataclass(frozen=True)
class CandidateIds:
    """Integer keys that mark false negatives: a candidate whose key equals the query's is
    not a negative, and is dropped from its candidate set.

    ``positive`` (N,): each row's positive; in-batch candidate j is dropped for query i
    when the keys match. ``negative``: (K,) for a shared pool or (N, M) for paired
    negatives, compared with the query's positive key. ``group`` (N,): rows that share
    a query (several positives); other rows of the group are not in-batch negatives.
    ``excluded``: (row, column) pairs, sorted by row, of shared-pool candidates that are
    not negatives of that row (a query's relevant documents in a corpus). ``row_query``
    (N,): the distinct query of each row when rows repeat a query (one row per relevant
    document); a block's matrix product against a shared pool is then taken once per
    distinct query.
    """

    positive: torch.Tensor | None = None
    negative: torch.Tensor | None = None
    group: torch.Tensor | None = None
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None
    row_query: torch.Tensor | None = None


@dataclass
class ScoredBlock:
    """Scores of a query block against one candidate block, ready to fold.

    ``excluded`` lists the (row, column) entries that are not candidates (a
    query's own positive among the in-batch positives, masked false negatives):
    their scores are -inf.
    A candidate identical to the positive carries exactly the positive's score.
    """

    scores: torch.Tensor  # (B, C)
    first_index: int  # index of column 0 in the mode's negative numbering
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None
    masked_rows: torch.Tensor | None = None
    """Row of each excluded entry that was a false negative (masked), for counting."""


class CandidateSource(Protocol):
    """The negatives of every query, block by block."""

    per_query: int
    """Candidates each query is scored against (before any is dropped)."""

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        """Score queries [start, stop) of ``batch`` (prepared rows, with their positives and
        the positives' scores) against their candidates, one block at a time."""
        ...


@dataclass(frozen=True)
class Matching:
    """How candidates are compared with a query's positive: by key, and, with
    ``mask_duplicates``, by their bits (copies are then dropped instead of tied)."""

    ids: CandidateIds
    mask_duplicates: bool


class InBatchCandidates:
    """The other positives of the query's batch (its own positive is the positive)."""

    def __init__(self, positives: Positives, reader: RowReader, matching: Matching,
                 candidate_block: int, batch_size: int | None) -> None:
        self.positives, self.reader, self.matching = positives, reader, matching
        self.candidate_block = candidate_block
        self.per_query = min(batch_size or positives.n, positives.n)

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        keys = self.matching.ids
        row_key = _slice(keys.positive, start, stop)
        batch_start, batch_stop = batch
        for first in range(batch_start, batch_stop, self.candidate_block):
            last = min(first + self.candidate_block, batch_stop)
            rows = self.positives.block(first, last)
            scores = pairwise(queries, rows.prepared, self.reader.similarity)
            own = _own_positions(start, stop, first, last, scores.device)
            drop = _key_matches(row_key, _slice(keys.positive, first, last))
            groups = _key_matches(_slice(keys.group, start, stop), _slice(keys.group, first, last))
            drop = groups if drop is None else drop if groups is None else drop | groups
            if not self.positives.repeat():
                # No two positives share their bits, so the only copy of a query's positive
                # among them is the positive itself, which is excluded anyway.
                yield _finish(scores, first, drop, own)
                continue
            yield _with_copies(scores, first, drop, own, positive_score, rows, positives,
                               self.matching.mask_duplicates)


class SharedCandidates:
    """A pool of negatives (K, d) that every query sees."""

    def __init__(self, pool: Rows, reader: RowReader, matching: Matching,
                 candidate_block: int) -> None:
        self.pool, self.reader, self.matching = pool, reader, matching
        self.candidate_block = candidate_block
        self.per_query = int(pool.shape[0])

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        keys = self.matching.ids
        row_key = _slice(keys.positive, start, stop)
        distinct = _distinct_rows(_slice(keys.row_query, start, stop))
        for first in range(0, self.per_query, self.candidate_block):
            last = min(first + self.candidate_block, self.per_query)
            rows = self.reader.block(self.pool, first, last)
            if distinct is None:
                scores = pairwise(queries, rows.prepared, self.reader.similarity)
            else:
                scores = pairwise(queries[distinct[0]], rows.prepared,
                                  self.reader.similarity)[distinct[1]]
            drop = _key_matches(row_key, _slice(keys.negative, first, last))
            drop = _excluded_pairs(keys.excluded, drop, scores, (start, stop), (first, last))
            yield _with_copies(scores, first, drop, None, positive_score, rows, positives,
                               self.matching.mask_duplicates)


class PairedCandidates:
    """Each query's own negatives (N, M, d), scored with their queries' block."""

    def __init__(self, negatives: Rows, reader: RowReader, matching: Matching) -> None:
        self.negatives, self.reader, self.matching = negatives, reader, matching
        self.per_query = int(negatives.shape[1])

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        keys = self.matching.ids
        row_key = _slice(keys.positive, start, stop)
        # Negatives and positives go through the same row-wise arithmetic, so a copy
        # of the positive already ties with it.
        rows = self.reader.block(self.negatives, start, stop, matrix=False)
        scores = paired(queries, rows.raw, self.reader.similarity)
        drop = _key_matches(row_key, _slice(keys.negative, start, stop))
        if self.matching.mask_duplicates:
            copies = (rows.raw == positives.raw[:, None, :]).all(dim=-1)
            drop = copies if drop is None else drop | copies
        yield _finish(scores, 0, drop, None)


class PooledCandidates:
    """The batch's positives and the batch's paired negatives (N, M, d), pooled: hard
    negative j of row r is candidate ``N + r·M + j``."""

    def __init__(self, in_batch: InBatchCandidates, negatives: Rows, reader: RowReader,
                 matching: Matching, candidate_block: int) -> None:
        self.in_batch, self.negatives, self.reader = in_batch, negatives, reader
        self.matching = matching
        self.n, self.per_row = in_batch.positives.n, int(negatives.shape[1])
        self.dim = int(negatives.shape[-1])
        self.rows_per_block = max(1, candidate_block // self.per_row)
        self.per_query = in_batch.per_query * (1 + self.per_row)

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        yield from self.in_batch.blocks(queries, positives, positive_score, start, stop, batch)
        keys = self.matching.ids
        row_key = _slice(keys.positive, start, stop)
        batch_start, batch_stop = batch
        for first in range(batch_start, batch_stop, self.rows_per_block):
            last = min(first + self.rows_per_block, batch_stop)
            rows = self.reader.block(self.negatives, first, last).flattened(self.dim)
            scores = pairwise(queries, rows.prepared, self.reader.similarity)
            negative_keys = _slice(keys.negative, first, last)
            drop = _key_matches(row_key, None if negative_keys is None
                                else negative_keys.reshape(-1))
            yield _with_copies(scores, self.n + first * self.per_row, drop, None,
                               positive_score, rows, positives, self.matching.mask_duplicates)


class QueueCandidates:
    """The batch's other positives and a shared pool (K, d) that every query sees, as a
    training step with a queue of negatives next to the batch (MoCo) sees them: shared
    row k is candidate ``N + k``. Each part is masked and tied as in its own mode."""

    def __init__(self, in_batch: InBatchCandidates, shared: SharedCandidates) -> None:
        self.in_batch, self.shared = in_batch, shared
        self.n = in_batch.positives.n
        self.per_query = in_batch.per_query + shared.per_query

    def blocks(
        self, queries: torch.Tensor, positives: RowBlock, positive_score: torch.Tensor,
        start: int, stop: int, batch: tuple[int, int],
    ) -> Iterator[ScoredBlock]:
        yield from self.in_batch.blocks(queries, positives, positive_score, start, stop, batch)
        for block in self.shared.blocks(queries, positives, positive_score, start, stop, batch):
            yield replace(block, first_index=self.n + block.first_index)


def _with_copies(
    scores: torch.Tensor, first_index: int, drop: torch.Tensor | None,
    own: tuple[torch.Tensor, torch.Tensor] | None, positive_score: torch.Tensor,
    rows: RowBlock, positives: RowBlock, mask_duplicates: bool,
) -> ScoredBlock:
    """Tie (or, with ``mask_duplicates``, drop) copies of the positive, then finish the
    block."""
    copies = _copy_positions(rows, positives)
    if copies is not None:
        if mask_duplicates:
            drop = torch.zeros_like(scores, dtype=torch.bool) if drop is None else drop
            drop[copies] = True
        else:  # widened first, so that the copies keep the positive's exact score
            scores = scores.to(positive_score.dtype)
            scores.index_put_(copies, positive_score[copies[0]])
    return _finish(scores, first_index, drop, own)


def _distinct_rows(
    row_query: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For a block's rows, the first row of each distinct query and each row's distinct
    query; None when no two rows share a query."""
    if row_query is None:
        return None
    distinct, inverse = torch.unique(row_query, return_inverse=True)
    if len(distinct) == len(row_query):
        return None
    positions = torch.arange(len(row_query), device=row_query.device)
    first = torch.full((len(distinct),), len(row_query), dtype=positions.dtype,
                       device=row_query.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return first, inverse


def _excluded_pairs(
    excluded: tuple[torch.Tensor, torch.Tensor] | None, drop: torch.Tensor | None,
    scores: torch.Tensor, rows: tuple[int, int], columns: tuple[int, int],
) -> torch.Tensor | None:
    """``drop`` with the excluded (row, column) pairs that fall in this block marked."""
    if excluded is None:
        return drop
    pair_rows, pair_columns = excluded
    low, high = (int(i) for i in torch.searchsorted(
        pair_rows, torch.tensor(rows, device=pair_rows.device)))
    inside = (pair_columns[low:high] >= columns[0]) & (pair_columns[low:high] < columns[1])
    if not bool(inside.any()):
        return drop
    drop = torch.zeros_like(scores, dtype=torch.bool) if drop is None else drop
    drop[pair_rows[low:high][inside] - rows[0], pair_columns[low:high][inside] - columns[0]] = True
    return drop


def _slice(keys: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if keys is None else keys[start:stop]


def _key_matches(
    row_keys: torch.Tensor | None, candidate_keys: torch.Tensor | None
) -> torch.Tensor | None:
    """(B, C) True where a candidate's key equals its query's; candidate keys are (C,) shared
    by the block or (B, C) per row."""
    if row_keys is None or candidate_keys is None:
        return None
    if candidate_keys.ndim == 1:
        return row_keys[:, None] == candidate_keys[None, :]
    return candidate_keys == row_keys[:, None]


def _finish(
    scores: torch.Tensor, first_index: int, drop: torch.Tensor | None,
    own: tuple[torch.Tensor, torch.Tensor] | None,
) -> ScoredBlock:
    """Set excluded entries to -inf: the query's own positive (counted once, up front) and
    masked false negatives (counted in ``masked_rows``)."""
    minus_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
    if own is not None:
        scores.index_put_(own, minus_inf)
        if drop is not None:
            drop[own] = False
    if drop is None:
        return ScoredBlock(scores, first_index, own)
    row, column = torch.nonzero(drop, as_tuple=True)
    if row.numel() == 0:
        return ScoredBlock(scores, first_index, own)
    scores.index_put_((row, column), minus_inf)
    excluded = (row, column) if own is None else (torch.cat([own[0], row]),
                                                  torch.cat([own[1], column]))
    return ScoredBlock(scores, first_index, excluded, row)


def _own_positions(
    start: int, stop: int, first: int, last: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(row, column) of each query's own positive inside an in-batch candidate block."""
    low, high = max(start, first), min(stop, last)
    if low >= high:
        return None
    own = torch.arange(low, high, device=device)
    return own - start, own - first


def _copy_positions(
    candidates: RowBlock, positives: RowBlock
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(row, column) of candidates bit-identical to the row's positive.

    A matrix product and a row-wise product may round the same dot product
    differently in the last bit, which would let a copy of the positive beat it
    or lose to it by chance; such copies are given the positive's exact score (or
    dropped). They are found by row fingerprints, then checked bit for bit, so the
    common case (no copies) costs almost nothing.
    """
    if candidates.fingerprint is None or positives.fingerprint is None:
        return None
    hit = torch.isin(candidates.fingerprint, positives.fingerprint)
    if not bool(hit.any()):
        return None
    columns = torch.nonzero(hit).squeeze(1)
    match = candidates.fingerprint[columns][None, :] == positives.fingerprint[:, None]
    row, which = torch.nonzero(match, as_tuple=True)
    column = columns[which]
    same = (candidates.raw[column] == positives.raw[row]).all(dim=-1)
    if not bool(same.any()):
        return None
    return row[same], column[same]
