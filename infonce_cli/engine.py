"""The streaming InfoNCE engine: losses, ranks and hardest negatives in one pass.

The engine walks query blocks × candidate blocks and keeps, per query, a running
log-sum-exp state for every temperature at once (the maximum similarity seen
and, per temperature, the sum of exp(s·(x − max)) for s = 1/τ), the positive's
score, the number of negatives scoring at or above it and the hardest negative.
Blocks are sized for the cache and capped by the memory budget; the scores are
only ever kept whole by a temperature sweep, when they fit that budget. So
memory stays bounded whatever N is.

Inputs are row-sliceable (NumPy arrays, tensors, or the file readers of io.py);
only the rows of the current block are read. Everything here is torch: no files, no
printing. The loss is differentiable when the inputs are tensors that require
grad (memory then grows with the graph autograd keeps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

import numpy as np
import torch

from .errors import UsageError
from .similarity import Similarity, paired, pairwise, prepare_rows, reduction_dtype


class RowSource(Protocol):
    """Anything row-sliceable with a shape: an array, a tensor, a file reader."""

    @property
    def shape(self) -> Any: ...

    @property
    def ndim(self) -> int: ...

    def __getitem__(self, rows: slice) -> Any: ...


Rows: TypeAlias = "np.ndarray[Any, Any] | torch.Tensor | RowSource"

DEFAULT_MAX_MEMORY = 512 * 2**20
"""Default working-memory budget for score blocks and row blocks, in bytes."""

_BYTES_PER_SCORE = 12
"""Working bytes per score in a block: the scores, their float32 copy when they are half
precision, and the block-sized masks; the rest of the work runs in cache-sized chunks."""

_QUERY_BLOCK = 512
_CANDIDATE_BLOCK = 4096
_BLOCK_BYTES = 16 * 2**20
"""Largest working block: blocks this small are reused by the allocator instead of being
mapped afresh (and page-faulted) each time."""
_MIN_BLOCK = 64
_ROUND_BLOCK = 256
_GPU_QUERY_BLOCK = 4096
_GPU_CANDIDATE_BLOCK = 16384
_GPU_BYTES_PER_SCORE = 24
"""On a GPU blocks are folded whole: the scores, their float32 copy and the temporaries."""


class NegativeMode(StrEnum):
    """Where each query's negatives come from."""

    PAIRED = "paired"
    SHARED = "shared"
    IN_BATCH = "in-batch"
    IN_BATCH_PAIRED = "in-batch+paired"


@dataclass(frozen=True)
class EngineOptions:
    """Everything that shapes a computation apart from the data itself."""

    temperatures: tuple[float, ...] = (0.05,)
    similarity: Similarity = Similarity.COSINE
    in_batch: bool = False
    batch_size: int | None = None
    symmetric: bool = False
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    max_memory: int = DEFAULT_MAX_MEMORY
    allow_tf32: bool = False
    """On CUDA, let float32 matrix products use TF32 (faster, about 1e-3 relative error)."""
    mask_duplicates: bool = False
    """Drop candidates bit-identical to the query's positive instead of counting them."""
    query_rows: tuple[int, int] | None = None
    """Score only queries [first, last) (one rank's share of a distributed run); their
    candidates are the same as in a full run."""


@dataclass(frozen=True)
class PerSampleScores:
    """Per-sample results of one pass. Shapes: N queries, T temperatures.

    ``hardest_negative_index`` indexes the negatives as the mode defines them:
    a row of the negatives file (shared), a position 0..M-1 among the query's
    own negatives (paired), a row of the positives (in-batch), or, in-batch with
    paired negatives, a row of the positives below N and ``N + row·M + j`` for
    hard negative j of a row. It is -1 when a query has no negative.
    """

    loss: torch.Tensor  # (N, T)
    positive_score: torch.Tensor  # (N,)
    hardest_negative_score: torch.Tensor  # (N,)
    hardest_negative_index: torch.Tensor  # (N,) int64
    rank: torch.Tensor  # (N,) int64
    num_candidates: torch.Tensor  # (N,) int64
    masked: torch.Tensor  # (N,) int64: false negatives dropped from the candidate set
    mode: NegativeMode
    positive_unbeaten: torch.Tensor
    """(N,) bool: no negative scores above the positive (ties allowed), in every direction."""
    softmax_gap: torch.Tensor | None = None
    """(N, P) at the probe temperatures: E_softmax[x] − x_pos, the derivative of the loss
    in s = 1/τ."""
    softmax_variance: torch.Tensor | None = None
    """(N, P): Var_softmax[x], the second derivative of the loss in s = 1/τ."""
    mean_candidate_gap: torch.Tensor | None = None
    """(N,): mean over C_i of x − x_pos, the derivative of the loss at s = 0 (τ → ∞)."""


@dataclass(frozen=True)
class CandidateIds:
    """Integer keys that mark false negatives: a candidate whose key equals the query's is
    not a negative, and is dropped from its candidate set.

    ``positive`` (N,): each row's positive; in-batch candidate j is dropped for query i
    when the keys match. ``negative``: (K,) for a shared pool or (N, M) for paired
    negatives, compared with the query's positive key. ``group`` (N,): rows that share
    a query (several positives); other rows of the group are not in-batch negatives.
    """

    positive: torch.Tensor | None = None
    negative: torch.Tensor | None = None
    group: torch.Tensor | None = None


def negative_mode(negatives: Rows | None, in_batch: bool) -> NegativeMode:
    """The mode implied by the negatives' shape and the in-batch flag."""
    if negatives is None:
        return NegativeMode.IN_BATCH
    if negatives.ndim == 2:
        if in_batch:
            raise UsageError("--in-batch pools the batch with paired negatives (N, M, d); "
                             "shared negatives (K, d) are already seen by every query")
        return NegativeMode.SHARED
    return NegativeMode.IN_BATCH_PAIRED if in_batch else NegativeMode.PAIRED


def score_embeddings(
    query: Rows,
    positive: Rows,
    negatives: Rows | None = None,
    options: EngineOptions | None = None,
    on_rows_done: Callable[[int], None] | None = None,
    ids: CandidateIds | None = None,
) -> PerSampleScores:
    """Per-sample InfoNCE losses and ranks for every temperature in the options.

    Shapes: query (N, d), positive (N, d), negatives None (in-batch), (K, d)
    (shared) or (N, M, d) (paired). Inputs must already be validated (finite,
    non-zero rows for cosine); ``on_rows_done`` is called with the number of
    query rows finished, for progress reporting.

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> out = score_embeddings(q, q, options=EngineOptions(temperatures=(1.0,)))
    >>> out.loss[:, 0]
    tensor([0.3133, 0.3133])
    >>> out.rank.tolist(), out.num_candidates.tolist()
    ([1, 1], [2, 2])
    """
    options = options or EngineOptions()
    passes = similarity_passes(query, positive, negatives, options, ids)
    return fold_passes(passes, options.temperatures, on_rows_done=on_rows_done)


def similarity_passes(
    query: Rows, positive: Rows, negatives: Rows | None, options: EngineOptions,
    ids: CandidateIds | None = None,
) -> list[SimilarityPass]:
    """The similarity passes a computation needs: one, or two when symmetric."""
    mode = negative_mode(negatives, options.in_batch)
    if options.symmetric and mode is not NegativeMode.IN_BATCH:
        raise UsageError("--symmetric works with in-batch negatives only (leave out --neg)")
    passes = [SimilarityPass(query, positive, negatives, mode, options, ids)]
    if options.symmetric:
        passes.append(SimilarityPass(positive, query, None, mode, options, ids))
    return passes


def fold_passes(
    passes: Sequence[SimilarityPass | CachedPass],
    temperatures: Sequence[float],
    probes: Sequence[float] = (),
    on_rows_done: Callable[[int], None] | None = None,
    first_rows: int | None = None,
) -> PerSampleScores:
    """Fold the similarity blocks of each pass into per-sample results at the temperatures,
    and at the ``probes`` temperatures with the softmax moments the temperature fit needs.

    The losses are (N, T + P), the probes last; the moments are (N, P). With two passes
    (symmetric), losses and moments are averaged; ranks and scores are those of the
    first (query → positive) pass. With ``first_rows``, only the query blocks covering
    that many first queries are folded (a cheap pilot).
    """
    results = [
        _fold(one, [*temperatures, *probes], len(temperatures),
              on_rows_done if index == 0 else None, first_rows)
        for index, one in enumerate(passes)
    ]
    if len(results) == 1:
        return results[0]
    forward, backward = results
    return replace(
        forward,
        positive_unbeaten=forward.positive_unbeaten & backward.positive_unbeaten,
        loss=(forward.loss + backward.loss) / 2,
        softmax_gap=_mean_or_none(forward.softmax_gap, backward.softmax_gap),
        softmax_variance=_mean_or_none(forward.softmax_variance, backward.softmax_variance),
        mean_candidate_gap=_mean_or_none(forward.mean_candidate_gap,
                                         backward.mean_candidate_gap),
    )


def _fold(
    source: SimilarityPass | CachedPass,
    temperatures: Sequence[float],
    moments_from: int,
    on_rows_done: Callable[[int], None] | None,
    first_rows: int | None = None,
) -> PerSampleScores:
    options = source.options
    scales = torch.tensor([1.0 / t for t in temperatures],
                          dtype=reduction_dtype(options.dtype), device=options.device)
    # Results go straight into full-length tensors: many small blocks kept alive between
    # large temporaries would fragment the heap and hold on to memory.
    merged: dict[str, torch.Tensor] = {}
    done = 0
    with _float_modes(options):
        for block in source.query_blocks():
            state = _RunningState(block.positive_score, scales, moments_from)
            for scored in block.candidates:
                state.update(scored)
            low, high = block.start - source.first_row, block.stop - source.first_row
            for key, value in state.finish().items():
                if key not in merged:
                    merged[key] = value.new_empty((source.rows, *value.shape[1:]))
                merged[key][low:high] = value
            done = high
            if on_rows_done is not None:
                on_rows_done(high - low)
            if first_rows is not None and high >= first_rows:
                break
    merged = {key: value[:done] for key, value in merged.items()}
    unbeaten = merged["hardest_negative_score"] <= merged["positive_score"]
    return PerSampleScores(mode=source.mode, positive_unbeaten=unbeaten.detach(), **merged)


@contextlib.contextmanager
def _float_modes(options: EngineOptions) -> Iterator[None]:
    """TF32 matrix products on CUDA only when asked for; the previous setting is restored.
    On the CPU, denormal floats are flushed to zero meanwhile: exp(s·(x − max)) of far
    negatives would otherwise produce them, and arithmetic on them is many times slower
    (they are below 1e-38, next to a sum of at least 1)."""
    if options.device.type != "cuda":
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = options.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _mean_or_none(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None or b is None else (a + b) / 2


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


@dataclass
class QueryBlock:
    """Rows [start, stop) of the queries, their positives' scores and their candidates."""

    start: int
    stop: int
    positive_score: torch.Tensor  # (B,)
    candidates: Iterable[ScoredBlock]


@dataclass
class _Rows:
    """A block of input rows: as given (in the compute dtype), prepared for scoring, and an
    exact fingerprint of each row's bits, for finding copies of the positive."""

    raw: torch.Tensor
    prepared: torch.Tensor
    fingerprint: torch.Tensor | None  # int64 per row; None where copies tie by construction


_FINGERPRINT_ROWS = 1024


def _fingerprint(rows: torch.Tensor) -> torch.Tensor:
    """An integer hash of each row's bits: equal rows always get equal fingerprints.

    The bits are read as 16-bit integers (|v| ≤ 2^15) and weighted (< 2^16) in a float64
    matrix product: every partial sum is an integer below 2^53, so exact in any order of
    summation, for rows of up to 2^22 such integers.
    """
    halves = rows.detach().contiguous().view(torch.int16)
    columns = halves.shape[-1]
    if columns >= 2**22:
        raise UsageError(f"rows of {rows.shape[-1]} values are too wide (at most 2^20 floats)")
    generator = torch.Generator().manual_seed(columns)
    weights = torch.randint(1, 2**16, (columns,), generator=generator, dtype=torch.float64)
    weights = weights.to(rows.device)
    flat = halves.reshape(-1, columns)
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=rows.device)
    for start in range(0, flat.shape[0], _FINGERPRINT_ROWS):  # float64 copies stay small
        stop = start + _FINGERPRINT_ROWS
        torch.mv(flat[start:stop].double(), weights, out=out[start:stop])
    return out.to(torch.int64).reshape(halves.shape[:-1])


class SimilarityPass:
    """One direction of the loss: queries against their candidate sets, block by block."""

    def __init__(
        self,
        query: Rows,
        positive: Rows,
        negatives: Rows | None,
        mode: NegativeMode,
        options: EngineOptions,
        ids: CandidateIds | None = None,
    ) -> None:
        self.query, self.positive, self.negatives = query, positive, negatives
        self.mode, self.options = mode, options
        self.ids = ids or CandidateIds()
        self.n = int(query.shape[0])
        self.dim = int(query.shape[-1])
        self.first_row, last_row = options.query_rows or (0, self.n)
        self.rows = last_row - self.first_row
        self.num_scores = self.rows * self._candidates_per_query()
        self.query_block, self.candidate_block = self._block_sizes()
        self._converted_positives: _Rows | None = None
        self._repeats: bool | None = None

    def _candidates_per_query(self) -> int:
        batch = min(self.options.batch_size or self.n, self.n)
        if self.mode is NegativeMode.IN_BATCH:
            return batch
        negatives: Rows = self.negatives  # type: ignore[assignment]
        if self.mode is NegativeMode.SHARED:
            return int(negatives.shape[0])
        if self.mode is NegativeMode.PAIRED:
            return int(negatives.shape[1])
        return batch * (1 + int(negatives.shape[1]))

    def _block_sizes(self) -> tuple[int, int]:
        """Blocks sized for the CPU's cache, or on a GPU as large as the memory budget
        allows (large products keep it busy, and each block is folded whole); the budget
        only ever shrinks them."""
        on_gpu = self.options.device.type != "cpu"
        budget = self.options.max_memory if on_gpu else min(self.options.max_memory,
                                                             _BLOCK_BYTES)
        per_score = _GPU_BYTES_PER_SCORE if on_gpu else _BYTES_PER_SCORE
        if self.mode is NegativeMode.PAIRED:
            per_query = int(self.negatives.shape[1]) * (self.dim + per_score)  # type: ignore[union-attr]
            return max(1, min(self.n, budget // max(per_query * 4, 1))), 0
        query_block = max(1, min(self.n, _GPU_QUERY_BLOCK if on_gpu else _QUERY_BLOCK,
                                 self.options.batch_size or self.n))
        budget_scores = max(budget // per_score, _MIN_BLOCK * _MIN_BLOCK)
        query_block = min(query_block, budget_scores // _MIN_BLOCK)
        candidate_block = min(_GPU_CANDIDATE_BLOCK if on_gpu else _CANDIDATE_BLOCK,
                              budget_scores // query_block)
        if candidate_block > _ROUND_BLOCK:  # matrix products run faster on round shapes
            candidate_block -= candidate_block % _ROUND_BLOCK
        return query_block, max(_MIN_BLOCK, candidate_block)

    def _positive_rows(self, start: int, stop: int) -> _Rows:
        """Positives [start, stop): in-batch candidates are read once per query block, so
        they are converted once when they fit the budget (as given and prepared)."""
        in_batch = self.mode in (NegativeMode.IN_BATCH, NegativeMode.IN_BATCH_PAIRED)
        fits = self.n * self.dim * 8 <= self.options.max_memory
        if self._converted_positives is None and in_batch and fits:
            self._converted_positives = self._rows(self.positive, 0, self.n)
        whole = self._converted_positives
        if whole is None:
            return self._rows(self.positive, start, stop)
        fingerprint = None if whole.fingerprint is None else whole.fingerprint[start:stop]
        return _Rows(whole.raw[start:stop], whole.prepared[start:stop], fingerprint)

    def _rows(self, source: Rows, start: int, stop: int, *, matrix: bool = True) -> _Rows:
        """Rows [start, stop) in the compute dtype. ``matrix`` rows are compared through a
        matrix product, so they are prepared and fingerprinted; paired rows are scored
        row by row from the raw values (see ``similarity.paired``)."""
        raw = self._raw(source, start, stop)
        if not matrix:
            return _Rows(raw, raw, None)
        return _Rows(raw, prepare_rows(raw, self.options.similarity), _fingerprint(raw))

    def _raw(self, source: Rows, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a tensor on the device, in the compute dtype."""
        block = source[start:stop]
        if isinstance(block, np.ndarray):
            if not (block.flags.writeable and block.flags.c_contiguous
                    and block.dtype.isnative):
                # Read-only maps, big-endian or Fortran-ordered arrays: a private copy.
                block = np.array(block, dtype=block.dtype.newbyteorder("="), order="C")
            block = torch.from_numpy(block)
            if self.options.device.type == "cuda":
                block = block.pin_memory()  # so the copy below runs asynchronously
        return block.to(device=self.options.device, dtype=self.options.dtype, non_blocking=True)

    def _batches(self) -> Iterator[tuple[int, int]]:
        """The batches that hold this pass's queries."""
        size = self.options.batch_size or self.n
        for start in range(0, self.n, size):
            stop = min(start + size, self.n)
            if stop > self.first_row and start < self.first_row + self.rows:
                yield start, stop

    def query_blocks(self) -> Iterator[QueryBlock]:
        """Query blocks in order; each block's candidates are computed as they are iterated."""
        for batch_start, batch_stop in self._batches():
            low = max(batch_start, self.first_row)
            high = min(batch_stop, self.first_row + self.rows)
            for start in range(low, high, self.query_block):
                stop = min(start + self.query_block, high)
                queries = prepare_rows(self._raw(self.query, start, stop),
                                       self.options.similarity)
                positives = self._positive_rows(start, stop)
                positive_score = paired(queries, positives.raw.unsqueeze(1),
                                        self.options.similarity)[:, 0]
                candidates = self._scored_blocks(queries, positives, positive_score, start, stop,
                                                 batch_start, batch_stop)
                yield QueryBlock(start, stop, positive_score, candidates)

    def cached(self) -> CachedPass:
        """All of this pass's scores, computed once and kept in memory."""
        blocks = [QueryBlock(b.start, b.stop, b.positive_score, list(b.candidates))
                  for b in self.query_blocks()]
        return CachedPass(blocks, self.mode, self.options, self.first_row, self.rows)

    def _scored_blocks(
        self, queries: torch.Tensor, positives: _Rows, positive_score: torch.Tensor,
        start: int, stop: int, batch_start: int, batch_stop: int,
    ) -> Iterator[ScoredBlock]:
        similarity = self.options.similarity
        keys = self.ids
        row_key = None if keys.positive is None else keys.positive[start:stop]
        if self.mode is NegativeMode.PAIRED:
            # Negatives and positives go through the same row-wise arithmetic, so a copy
            # of the positive already ties with it.
            rows = self._rows(self.negatives, start, stop, matrix=False)  # type: ignore[arg-type]
            scores = paired(queries, rows.raw, similarity)
            drop = _key_matches(row_key, _slice(keys.negative, start, stop))
            if self.options.mask_duplicates:
                copies = (rows.raw == positives.raw[:, None, :]).all(dim=-1)
                drop = copies if drop is None else drop | copies
            yield _finish(scores, 0, drop, None)
            return
        if self.mode is NegativeMode.SHARED:
            pool: Rows = self.negatives  # type: ignore[assignment]
            for first in range(0, int(pool.shape[0]), self.candidate_block):
                last = min(first + self.candidate_block, int(pool.shape[0]))
                rows = self._rows(pool, first, last)
                scores = pairwise(queries, rows.prepared, similarity)
                drop = _key_matches(row_key, _slice(keys.negative, first, last))
                yield self._with_copies(scores, first, drop, None, positive_score, rows,
                                        positives)
            return
        for first in range(batch_start, batch_stop, self.candidate_block):
            last = min(first + self.candidate_block, batch_stop)
            rows = self._positive_rows(first, last)
            scores = pairwise(queries, rows.prepared, similarity)
            own = _own_positions(start, stop, first, last, scores.device)
            drop = _key_matches(row_key, _slice(keys.positive, first, last))
            groups = _key_matches(_slice(keys.group, start, stop), _slice(keys.group, first, last))
            drop = groups if drop is None else drop if groups is None else drop | groups
            if not self._positives_repeat():
                # No two positives share their bits, so the only copy of a query's positive
                # among them is the positive itself, which is excluded anyway.
                yield _finish(scores, first, drop, own)
                continue
            yield self._with_copies(scores, first, drop, own, positive_score, rows, positives)
        if self.mode is NegativeMode.IN_BATCH_PAIRED:
            negatives: Rows = self.negatives  # type: ignore[assignment]
            per_row = int(negatives.shape[1])
            rows_per_block = max(1, self.candidate_block // per_row)
            for first in range(batch_start, batch_stop, rows_per_block):
                last = min(first + rows_per_block, batch_stop)
                block = self._rows(negatives, first, last)
                fingerprint = block.fingerprint
                rows = _Rows(block.raw.reshape(-1, self.dim), block.prepared.reshape(-1, self.dim),
                             None if fingerprint is None else fingerprint.reshape(-1))
                scores = pairwise(queries, rows.prepared, similarity)
                negative_keys = _slice(keys.negative, first, last)
                drop = _key_matches(row_key, None if negative_keys is None
                                    else negative_keys.reshape(-1))
                yield self._with_copies(scores, self.n + first * per_row, drop, None,
                                        positive_score, rows, positives)

    def _positives_repeat(self) -> bool:
        """Whether two positives may be bit-identical (unknown when they are not kept)."""
        if self._repeats is None:
            whole = self._converted_positives
            if whole is None or whole.fingerprint is None:
                self._repeats = True
            else:
                self._repeats = bool(torch.unique(whole.fingerprint).numel() < self.n)
        return self._repeats

    def _with_copies(
        self, scores: torch.Tensor, first_index: int, drop: torch.Tensor | None,
        own: tuple[torch.Tensor, torch.Tensor] | None, positive_score: torch.Tensor,
        rows: _Rows, positives: _Rows,
    ) -> ScoredBlock:
        """Tie (or, with mask_duplicates, drop) copies of the positive, then finish the block."""
        copies = _copy_positions(rows, positives)
        if copies is not None:
            if self.options.mask_duplicates:
                drop = torch.zeros_like(scores, dtype=torch.bool) if drop is None else drop
                drop[copies] = True
            else:  # widened first, so that the copies keep the positive's exact score
                scores = scores.to(positive_score.dtype)
                scores.index_put_(copies, positive_score[copies[0]])
        return _finish(scores, first_index, drop, own)


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


@dataclass
class CachedPass:
    """A similarity pass whose score blocks are all in memory, to fold again cheaply."""

    blocks: list[QueryBlock]
    mode: NegativeMode
    options: EngineOptions
    first_row: int
    rows: int

    def query_blocks(self) -> Iterator[QueryBlock]:
        return iter(self.blocks)


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
    candidates: _Rows, positives: _Rows
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


class _RunningState:
    """Per-query running log-sum-exp and rank state for one query block.

    The positive is in every candidate set; it is counted up front, so the
    state starts at max = x_pos and sum = exp(0) = 1 for every temperature.
    """

    def __init__(
        self, positive_score: torch.Tensor, scales: torch.Tensor, moments_from: int
    ) -> None:
        rows = positive_score.shape[0]
        device, dtype = positive_score.device, positive_score.dtype
        self.positive_score = positive_score
        self.scales = scales
        self.scale_values: list[float] = scales.tolist()
        self.maximum = positive_score.detach().clone()
        # exp(s·(x_pos − max)) = 1, written out so that autograd sees the positive's term
        # (copied: the sums are updated in place, and exp keeps its result for the gradient).
        self.sums = torch.exp((positive_score - self.maximum)[:, None] * scales).clone()
        self.first_moment: torch.Tensor | None = None
        self.second_moment: torch.Tensor | None = None
        self.gap_sum: torch.Tensor | None = None
        self.moments_from = moments_from
        if moments_from < scales.shape[0]:
            self.first_moment = torch.zeros_like(self.sums[:, moments_from:])
            self.second_moment = torch.zeros_like(self.sums[:, moments_from:])
            self.gap_sum = torch.zeros_like(positive_score)
        self.at_or_above = torch.zeros(rows, dtype=torch.int64, device=device)
        self.num_candidates = torch.ones(rows, dtype=torch.int64, device=device)
        self.masked = torch.zeros(rows, dtype=torch.int64, device=device)
        self.hardest_score = torch.full((rows,), -math.inf, dtype=dtype, device=device)
        self.hardest_index = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.select_rows = _picks_rows(device)
        self._buffers: dict[str, torch.Tensor] = {}

    def update(self, block: ScoredBlock) -> None:
        """Fold a (B, C) block of negative scores into the state.

        Ranks, hardest negatives and the running maximum are updated for the whole block.
        Then, without autograd, the sums of exponentials are folded in row chunks that
        stay in the CPU's cache (half-precision scores widened to float32 on the way),
        through scratch space reused by every chunk and temperature.
        """
        scores = block.scores
        dtype = self.positive_score.dtype
        if scores.dtype != dtype and not scores.requires_grad:
            # Half-precision scores are widened once, into space reused by every block.
            scores = self._buffer("widened", scores.shape).copy_(scores)
        with torch.no_grad():
            self.num_candidates += scores.shape[1]
            if block.excluded is not None:
                self.num_candidates.index_add_(
                    0, block.excluded[0], torch.full_like(block.excluded[0], -1))
            if block.masked_rows is not None:
                self.masked.index_add_(0, block.masked_rows,
                                       torch.ones_like(block.masked_rows))
            detached = scores.detach()
            block_max = detached.amax(dim=1).to(dtype)
            self._count_at_or_above(detached, block_max)
            self._track_hardest(detached, block_max, block.first_index)
            new_maximum = torch.maximum(self.maximum, block_max)
            rescale = torch.exp((self.maximum - new_maximum)[:, None] * self.scales)
            self.maximum = new_maximum
        self.sums = self.sums * rescale
        if self.first_moment is not None and self.second_moment is not None:
            self.first_moment = self.first_moment * rescale[:, self.moments_from:]
            self.second_moment = self.second_moment * rescale[:, self.moments_from:]
        if scores.requires_grad:
            self._add_sums(slice(0, scores.shape[0]), scores.to(dtype), None)
            return
        chunk = (max(1, _CACHE_SCORES // max(1, scores.shape[1]))
                 if scores.device.type == "cpu" else scores.shape[0])  # a GPU takes it whole
        shape = (chunk, scores.shape[1])
        scratch = _Scratch(self._buffer("shifted", shape), self._buffer("work", shape),
                           None if self.gap_sum is None else self._buffer("gap", shape))
        with torch.no_grad():
            for start in range(0, scores.shape[0], chunk):
                rows = slice(start, min(start + chunk, scores.shape[0]))
                self._add_sums(rows, scores[rows], scratch.fitting(rows.stop - rows.start))

    def _buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Scratch space of this shape, reused by every block of the query block."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[name] = self.positive_score.new_empty(size)
        return buffer[:size].view(shape)

    def _add_sums(self, rows: slice, scores: torch.Tensor, scratch: _Scratch | None) -> None:
        """Add the exponential sums (and the probes' moments) of the queries ``rows``."""
        gap = None
        if self.gap_sum is not None:  # x − x_pos, 0 for the excluded entries (−inf scores)
            positive_score = self.positive_score[rows, None]
            gap = (scores - positive_score if scratch is None
                   else torch.sub(scores, positive_score, out=scratch.gap))
            gap = gap.nan_to_num(neginf=0.0) if scratch is None else gap.nan_to_num_(neginf=0.0)
            self.gap_sum[rows] += gap.sum(dim=1)
        maximum = self.maximum[rows, None]
        if scratch is None:
            sums, firsts, seconds = _exp_sums(scores - maximum, gap, self.scales,
                                              self.moments_from)
        else:
            shifted = torch.sub(scores, maximum, out=scratch.shifted)
            sums, firsts, seconds = _exp_sums_in_place(
                shifted, gap, self.scale_values, self.moments_from, scratch.work)
        self.sums[rows] += sums
        if self.first_moment is not None and self.second_moment is not None:
            self.first_moment[rows] += firsts
            self.second_moment[rows] += seconds

    def _count_at_or_above(self, scores: torch.Tensor, block_max: torch.Tensor) -> None:
        """Count the negatives scoring at or above the positive. On the CPU only the rows
        whose block maximum reaches their positive are compared (usually few); a GPU
        compares every row rather than wait for the flags."""
        positive = self.positive_score.detach()
        chosen = None
        if self.select_rows:
            chosen = torch.nonzero(block_max >= positive).squeeze(1)
            if chosen.numel() == 0:
                return
            if chosen.numel() < scores.shape[0]:
                scores, positive = scores[chosen], positive[chosen]
        # Comparing into floats and summing them is several times faster than with bools.
        compared = torch.ge(scores, positive[:, None],
                            out=self._buffer("compared", tuple(scores.shape)))
        counts = compared.sum(dim=1).to(torch.int64)
        if chosen is None:
            self.at_or_above += counts
        else:
            self.at_or_above.index_add_(0, chosen, counts)

    def _track_hardest(
        self, scores: torch.Tensor, block_max: torch.Tensor, first_index: int
    ) -> None:
        """Keep each query's hardest negative: its score and its index in the mode's
        numbering. On the CPU only the rows whose hardest negative changes are searched
        for its column; a GPU searches every row rather than wait for the flags."""
        changed = block_max > self.hardest_score
        if not self.select_rows:
            value, column = scores.max(dim=1)
            self.hardest_score = torch.where(changed, value.to(block_max.dtype),
                                             self.hardest_score)
            self.hardest_index = torch.where(changed, column + first_index, self.hardest_index)
            return
        better = torch.nonzero(changed).squeeze(1)
        if better.numel():
            value, column = (scores if better.numel() == len(scores) else scores[better]).max(dim=1)
            self.hardest_score[better] = value.to(block_max.dtype)
            self.hardest_index[better] = column + first_index

    def finish(self) -> dict[str, torch.Tensor]:
        # (max − x_pos)·s in one product: exactly 0 when the positive is the maximum.
        loss = torch.log(self.sums) + (self.maximum - self.positive_score)[:, None] * self.scales
        result = {
            "loss": loss,
            "positive_score": self.positive_score,
            "hardest_negative_score": self.hardest_score,
            "hardest_negative_index": self.hardest_index,
            "rank": self.at_or_above + 1,
            "num_candidates": self.num_candidates,
            "masked": self.masked,
        }
        if self.first_moment is not None and self.second_moment is not None:
            probe_sums = self.sums[:, self.moments_from:]
            mean_gap = self.first_moment / probe_sums
            result["softmax_gap"] = mean_gap
            variance = self.second_moment / probe_sums - mean_gap.square()
            result["softmax_variance"] = variance.clamp_min(0)
        if self.gap_sum is not None:
            result["mean_candidate_gap"] = self.gap_sum / self.num_candidates
        return result


def _picks_rows(device: torch.device) -> bool:
    """Whether rank counting and hardest-negative search are narrowed to the rows that need
    them, which means waiting for the flags that pick them: on the CPU, yes; a GPU is
    better off doing every row than stalling its queue."""
    return device.type == "cpu"


_CACHE_SCORES = 2**18
"""Scores per row chunk of a block: small enough to stay in the CPU's cache."""

_EXP_FLOOR = -80.0
"""Exponents are clamped to at least this on the CPU, which computes exp() of arguments
below about −87 (denormal or zero results) dozens of times slower. exp(−80) ≈ 2e−35 is far
below float resolution next to the sums, which are at least 1 (the largest score's term)."""


@dataclass
class _Scratch:
    """Reused (rows, C) work space for folding row chunks."""

    shifted: torch.Tensor
    work: torch.Tensor
    gap: torch.Tensor | None = None

    def fitting(self, rows: int) -> _Scratch:
        return _Scratch(self.shifted[:rows], self.work[:rows],
                        None if self.gap is None else self.gap[:rows])


def _exp_sums(
    shifted: torch.Tensor, gap: torch.Tensor | None, scales: torch.Tensor, moments_from: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row and scale s: Σ exp(s·shifted), and for the scales from ``moments_from`` on
    (given ``gap``) Σ w·gap and Σ w·gap². Out of place, for autograd: (B, T, C) at once."""
    weights = torch.exp((shifted[:, None, :] * scales[:, None]).clamp(min=_EXP_FLOOR))
    sums = weights.sum(dim=-1)
    if gap is None or moments_from >= scales.shape[0]:
        empty = sums.new_empty(0)
        return sums, empty, empty
    weighted_gap = weights[:, moments_from:] * gap[:, None, :]
    return sums, weighted_gap.sum(dim=-1), (weighted_gap * gap[:, None, :]).sum(dim=-1)


def _exp_sums_in_place(
    shifted: torch.Tensor, gap: torch.Tensor | None, scales: list[float], moments_from: int,
    work: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_exp_sums`` through the scratch tensor ``work``, one scale at a time: each score is
    read from the cache, and nothing is allocated per scale."""
    rows = shifted.shape[0]
    sums = shifted.new_empty((len(scales), rows))
    probes = max(len(scales) - moments_from, 0) if gap is not None else 0
    firsts = seconds = sums[:0]
    if probes:
        firsts, seconds = shifted.new_empty((probes, rows)), shifted.new_empty((probes, rows))
    # On the CPU, exponents are clamped where they could fall below the floor (the lowest
    # score decides it when there are enough scales to be worth finding it).
    on_cpu = shifted.device.type == "cpu"
    lowest = float(shifted.amin()) if on_cpu and len(scales) > 2 else -math.inf
    for index, scale in enumerate(scales):
        torch.mul(shifted, scale, out=work)
        if on_cpu and scale * lowest < _EXP_FLOOR:
            work.clamp_(min=_EXP_FLOOR)
        work.exp_()
        torch.sum(work, dim=1, out=sums[index])
        if gap is not None and index >= moments_from:
            torch.sum(work.mul_(gap), dim=1, out=firsts[index - moments_from])
            torch.sum(work.mul_(gap), dim=1, out=seconds[index - moments_from])
    return sums.T, firsts.T, seconds.T
