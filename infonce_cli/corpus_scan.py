"""One streamed pass of queries over a whole corpus, folded per query, not per pair.

Every (query, relevant document) pair of a query sees the same corpus, and every
document but the query's positives is a negative of each of them. So the pass scores
each distinct query once against each corpus block, and keeps per query the
log-sum-exp and the maximum over its negatives and, when asked, its top-k documents;
per relevant pair it only counts the negatives scoring at or above the document. The
rest of each pair's result follows from those and the pairs' own scores
(``ranking.relevant_positions``).

The scores of the relevant documents are their pairs' own (row-wise) scores, also in
the block where the corpus holds them and wherever it holds a bit-identical copy: a
copy ties with the document exactly, as in ``score``. No Q × D matrix is held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .accumulators import EXP_FLOOR, Scratch, TopK, in_groups
from .engine import EngineOptions, NegativeMode, Rows, float_modes, plan_blocks
from .rows import RowReader, fingerprint, gather_rows
from .similarity import Similarity, paired, pairwise, prepare_rows, reduction_dtype

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class QueryPairs:
    """Relevant pairs, sorted by query row: the query and corpus row of each, and whether it
    is a positive (not a negative of its query)."""

    query_row: torch.Tensor  # (P,) int64
    doc_row: torch.Tensor  # (P,) int64
    positive: torch.Tensor  # (P,) bool


@dataclass(frozen=True)
class CorpusScan:
    """Per scanned query (``queries``, sorted rows): over its negatives (every document
    but its positives), the log Σ exp(x/τ), the largest score and its corpus row (−inf and
    −1 when it has none); per pair, its score and the negatives scoring at or above the
    document; with ``top_k``, the best documents (scores, corpus rows; −inf and −1 past
    the corpus)."""

    queries: Array
    log_sum_exp: torch.Tensor  # (Q,)
    negative_max: torch.Tensor  # (Q,)
    negative_row: torch.Tensor  # (Q,) int64
    pair_score: torch.Tensor  # (P,): each pair's own score, a row-wise product
    at_or_above: torch.Tensor  # (P,) int64
    top_scores: torch.Tensor | None = None  # (Q, k)
    top_rows: torch.Tensor | None = None  # (Q, k) int64


def scan_corpus(
    query: Rows, corpus: Rows, queries: Array, pairs: QueryPairs, options: EngineOptions,
    top_k: int = 0, on_pairs_done: Callable[[int], None] | None = None,
) -> CorpusScan:
    """Scan the corpus for the query rows ``queries`` (sorted; every query of ``pairs``
    among them) at the first temperature of ``options``.

    The corpus is the outer loop: each corpus block is read, prepared and searched for
    copies of the relevant documents once per group of queries, then scored against every
    block of queries of the group, whose running states are all kept
    (a few numbers per query and pair, and the top-k lists). Queries are taken in groups
    whose rows and relevant documents fit half the memory budget: usually one group, so
    the corpus is read once."""
    device = options.device
    reader = RowReader(options.similarity, options.dtype, device)
    dtype = reduction_dtype(options.dtype)
    total, dim = int(corpus.shape[0]), int(query.shape[-1])
    plan = plan_blocks(len(queries), dim, NegativeMode.SHARED, 0, device.type,
                       options.max_memory, None)
    candidate_block = plan.candidate_block
    scale = 1.0 / options.temperatures[0]
    # Cosine scores lie in [−1, 1] (a little more in half precision), so their exponents
    # s·(x − max) cannot fall to where exp() is slow unless τ is below about 1/38.
    clamps = options.similarity is not Similarity.COSINE or 2.1 * scale > -EXP_FLOOR
    queries_t = torch.from_numpy(np.asarray(queries, dtype=np.int64)).to(device)
    # Where each scanned query's pairs start and end (pairs are sorted by query).
    bounds = torch.searchsorted(pairs.query_row, torch.stack([queries_t, queries_t + 1]))
    out = _Outputs(len(queries), len(pairs.query_row), top_k, dtype, device)
    scratch = Scratch(out.log_sum_exp)  # work space reused by every block of the scan
    progress = _Progress(on_pairs_done)
    with torch.no_grad(), float_modes(options):
        row_bytes = dim * dtype.itemsize
        for group in _groups(bounds, plan.query_block, row_bytes, options.max_memory // 2):
            group_low, group_high = int(bounds[0, group[0][0]]), int(bounds[1, group[-1][1] - 1])
            copies = Copies.of(pairs, group_low, group_high, corpus, reader)
            # Where each block's pairs start among the group's, and where the last ends.
            cuts = torch.tensor([int(bounds[0, start]) - group_low for start, _ in group]
                                + [group_high - group_low], device=device)
            blocks = []
            for (start, stop), low, high in zip(group, cuts[:-1].tolist(), cuts[1:].tolist(),
                                                strict=True):
                prepared = prepare_rows(reader.raw(gather_rows(query, queries[start:stop]), 0,
                                                   stop - start), options.similarity)
                local = QueryBlock.of(pairs, group_low + low, group_low + high,
                                      queries_t[start:stop], prepared,
                                      copies.documents[low:high], reader.similarity)
                state = _QueryState(stop - start, high - low, scale, clamps, top_k,
                                    scratch)
                blocks.append((prepared, local, state))
            for first in range(0, total, candidate_block):
                last = min(first + candidate_block, total)
                raw = reader.raw(corpus, first, last)
                found = copies.find(raw, first)
                documents = prepare_rows(raw, options.similarity)
                for (prepared, local, state), copied in zip(blocks, found.split(cuts),
                                                            strict=True):
                    scores = pairwise(prepared, documents, options.similarity)
                    if scores.dtype != dtype:  # half precision: widened into reused space
                        scores = scratch.take("scores", tuple(scores.shape)).copy_(scores)
                    local.own_scores(scores, copied)
                    state.update(scores, local, first, copied)
                progress.to((group_high - group_low) * last // total)
            for (start, stop), (_, local, state) in zip(group, blocks, strict=True):
                out.put(start, stop, int(bounds[0, start]), int(bounds[1, stop - 1]), state,
                        local.score)
            progress.finish_group()
    return out.result(queries)


def _groups(bounds: torch.Tensor, query_block: int, row_bytes: int, budget: int
            ) -> Iterator[list[tuple[int, int]]]:
    """Query blocks [start, stop), in groups whose query rows and relevant documents take
    at most ``budget`` bytes (at least one block per group)."""
    count = bounds.shape[1]
    group: list[tuple[int, int]] = []
    used = 0
    for start in range(0, count, query_block):
        stop = min(start + query_block, count)
        size = (stop - start + int(bounds[1, stop - 1] - bounds[0, start])) * row_bytes
        if group and used + size > budget:
            yield group
            group, used = [], 0
        group.append((start, stop))
        used += size
    if group:
        yield group


class _Progress:
    """Reports the pairs done, a share of each group's pairs per corpus block."""

    def __init__(self, on_pairs_done: Callable[[int], None] | None) -> None:
        self.on_pairs_done, self.reported = on_pairs_done, 0

    def to(self, done: int) -> None:
        if self.on_pairs_done is not None and done > self.reported:
            self.on_pairs_done(done - self.reported)
        self.reported = max(self.reported, done)

    def finish_group(self) -> None:
        self.reported = 0


@dataclass(frozen=True)
class Found:
    """Copies of relevant documents in a corpus block: for each, its pair (sorted), its
    column, and whether it is the document of a positive pair itself (not a copy)."""

    pair: torch.Tensor  # (F,) int64
    column: torch.Tensor  # (F,) int64
    own_positive: torch.Tensor  # (F,) bool

    def split(self, cuts: torch.Tensor) -> list[Found]:
        """Those of the pairs [cuts[i], cuts[i + 1]), numbered from cuts[i], for each i."""
        at = torch.searchsorted(self.pair, cuts).tolist()
        return [Found(self.pair[a:b] - low, self.column[a:b], self.own_positive[a:b])
                for a, b, low in zip(at[:-1], at[1:], cuts[:-1].tolist(), strict=True)]


@dataclass(frozen=True)
class Copies:
    """The relevant documents of a group of pairs (raw, in the compute dtype, in pair
    order) sorted by their fingerprints, to find each one's copies in a corpus block: the
    document itself and every bit-identical row."""

    documents: torch.Tensor  # (P, d)
    doc_row: torch.Tensor  # (P,) int64
    positive: torch.Tensor  # (P,) bool
    by_print: torch.Tensor  # (P,) int64
    sorted_prints: torch.Tensor  # (P,) int64

    @classmethod
    def of(cls, pairs: QueryPairs, low: int, high: int, corpus: Rows,
           reader: RowReader) -> Copies:
        """The documents of pairs [low, high)."""
        doc_row = pairs.doc_row[low:high]
        documents = reader.raw(gather_rows(corpus, doc_row.cpu().numpy()), 0, high - low)
        prints = fingerprint(documents)
        by_print = torch.argsort(prints)
        return cls(documents, doc_row, pairs.positive[low:high], by_print, prints[by_print])

    def find(self, raw: torch.Tensor, first: int) -> Found:
        """The copies in the corpus block ``raw`` of rows [first, first + len(raw)): found by
        fingerprint, then checked bit for bit."""
        prints = fingerprint(raw)
        # Join the block's fingerprints with the pairs' by sorting: for each column, the
        # run of pairs with the same fingerprint.
        low = torch.searchsorted(self.sorted_prints, prints)
        count = torch.searchsorted(self.sorted_prints, prints, right=True) - low
        column = torch.arange(len(prints), device=prints.device).repeat_interleave(count)
        start = low.repeat_interleave(count)
        step = torch.arange(len(column), device=prints.device) - (
            count.cumsum(0) - count).repeat_interleave(count)
        pair = self.by_print[start + step]
        same = (raw[column] == self.documents[pair]).all(dim=-1)
        pair, order = pair[same].sort()
        column = column[same][order]
        return Found(pair, column, self.positive[pair] & (self.doc_row[pair] == column + first))


@dataclass(frozen=True)
class QueryBlock:
    """The pairs of a block of queries: each pair's query as a block row and the pair's own
    score."""

    pair_query: torch.Tensor
    score: torch.Tensor

    @classmethod
    def of(cls, pairs: QueryPairs, low: int, high: int, queries: torch.Tensor,
           prepared: torch.Tensor, documents: torch.Tensor,
           similarity: Similarity) -> QueryBlock:
        """Pairs [low, high) of the block of ``queries`` (prepared rows ``prepared``), whose
        documents are ``documents`` (raw, in the compute dtype)."""
        pair_query = torch.searchsorted(queries, pairs.query_row[low:high])
        score = paired(prepared[pair_query], documents.unsqueeze(1), similarity)[:, 0]
        return cls(pair_query, score.to(reduction_dtype(documents.dtype)))

    def own_scores(self, scores: torch.Tensor, found: Found) -> None:
        """Give each relevant document, and every bit-identical copy of it in this corpus
        block, its pair's own score."""
        scores[self.pair_query[found.pair], found.column] = self.score[found.pair].to(
            scores.dtype)

    def positives_in(self, found: Found) -> tuple[torch.Tensor, torch.Tensor]:
        """(block row, column) of the positives that lie in this corpus block."""
        own = found.own_positive
        return self.pair_query[found.pair[own]], found.column[own]


class _QueryState:
    """Running per-query state of one block of queries."""

    def __init__(self, rows: int, pairs: int, scale: float, clamps: bool, top_k: int,
                 scratch: Scratch) -> None:
        dtype, device = scratch.like.dtype, scratch.like.device
        self.scale, self.clamps = scale, clamps
        self.at_or_above = torch.zeros(pairs, dtype=torch.int64, device=device)
        self.maximum = torch.full((rows,), -math.inf, dtype=dtype, device=device)
        self.best_row = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.sums = torch.zeros(rows, dtype=dtype, device=device)
        self.top = TopK(top_k, self.sums) if top_k else None
        self.scratch = scratch

    def update(self, scores: torch.Tensor, pairs: QueryBlock, first: int, found: Found
               ) -> None:
        """Fold a block of scores (queries × documents [first, first + C)), where the
        relevant documents' copies ``found`` lie."""
        if self.top is not None:
            self.top.update(scores, first)
        rows, columns = pairs.positives_in(found)
        scores[rows, columns] = -math.inf  # a query's positives are not its negatives
        # The maxima of groups of columns give the block's, and narrow the search for the
        # hardest negative's column and the counts to the groups that reach them.
        grouped = in_groups(scores)
        group_max = grouped.amax(dim=2)
        block_max = group_max.amax(dim=1)
        better = torch.nonzero(block_max > self.maximum).squeeze(1)
        if better.numel():  # the column only where the hardest negative changes
            group = group_max[better].argmax(dim=1)  # the first group holding the maximum
            column = group * grouped.shape[2] + grouped[better, group].argmax(dim=1)
            self.best_row[better] = column + first
        new_maximum = torch.maximum(self.maximum, block_max)
        # Rows with no negative yet keep a maximum of −inf: they are shifted by 0, and the
        # floor terms of their −inf scores are dropped once a negative comes.
        shift = torch.where(torch.isfinite(new_maximum), new_maximum, 0.0)
        self.sums *= torch.where(torch.isfinite(self.maximum),
                                 torch.exp((self.maximum - shift) * self.scale), 0.0)
        self.maximum = new_maximum
        self._count(grouped, group_max, block_max, pairs)
        # s·(x − max) in one pass, clamped where it could be slow to exponentiate (exp(−inf)
        # of the positives is not), then exp and sum, in space reused by every block.
        work = torch.add((shift * -self.scale)[:, None], scores, alpha=self.scale,
                         out=self.scratch.take("work", tuple(scores.shape)))
        if self.clamps:
            work.clamp_(min=EXP_FLOOR)
        self.sums += work.exp_().sum(dim=1)

    def _count(self, grouped: torch.Tensor, group_max: torch.Tensor, block_max: torch.Tensor,
               pairs: QueryBlock) -> None:
        """Count, per pair, the block's negatives scoring at or above its document: only in
        the groups of its query's row whose maximum reaches the document's score."""
        reached = torch.nonzero(block_max[pairs.pair_query] >= pairs.score).squeeze(1)
        if not reached.numel():
            return
        row, bar = pairs.pair_query[reached], pairs.score[reached].to(grouped.dtype)
        pair, group = torch.nonzero(group_max[row] >= bar[:, None], as_tuple=True)
        counts = (grouped[row[pair], group] >= bar[pair, None]).sum(dim=1)
        self.at_or_above.index_add_(0, reached[pair], counts)

    def log_sum_exp(self) -> torch.Tensor:
        """log Σ exp(s·x) over each query's negatives (−inf when it has none)."""
        return torch.log(self.sums) + self.maximum * self.scale


class _Outputs:
    """Full-length results, filled a block of queries at a time."""

    def __init__(self, queries: int, pairs: int, top_k: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.log_sum_exp = torch.empty(queries, dtype=dtype, device=device)
        self.negative_max = torch.empty(queries, dtype=dtype, device=device)
        self.negative_row = torch.empty(queries, dtype=torch.int64, device=device)
        self.at_or_above = torch.zeros(pairs, dtype=torch.int64, device=device)
        self.pair_score = torch.zeros(pairs, dtype=dtype, device=device)
        self.top_scores = self.top_rows = None
        if top_k:
            self.top_scores = torch.full((queries, top_k), -math.inf, dtype=dtype,
                                         device=device)
            self.top_rows = torch.full((queries, top_k), -1, dtype=torch.int64, device=device)

    def put(self, start: int, stop: int, low: int, high: int, state: _QueryState,
            pair_score: torch.Tensor) -> None:
        self.log_sum_exp[start:stop] = state.log_sum_exp()
        self.negative_max[start:stop] = state.maximum
        self.negative_row[start:stop] = state.best_row
        self.at_or_above[low:high] = state.at_or_above
        self.pair_score[low:high] = pair_score
        if self.top_scores is not None and self.top_rows is not None:
            assert state.top is not None
            self.top_scores[start:stop] = state.top.scores
            self.top_rows[start:stop] = state.top.index

    def result(self, queries: Array) -> CorpusScan:
        return CorpusScan(np.asarray(queries), self.log_sum_exp, self.negative_max,
                          self.negative_row, self.pair_score, self.at_or_above,
                          self.top_scores, self.top_rows)
