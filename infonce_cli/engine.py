"""The streaming InfoNCE engine: losses, ranks and hardest negatives in one pass.

The engine walks query blocks × candidate blocks and keeps, per query, a running
log-sum-exp state for every temperature at once (the maximum similarity seen
and, per temperature, the sum of exp(s·(x − max)) for s = 1/τ), the positive's
score, the number of negatives scoring at or above it and the hardest negative.
Blocks are sized for the cache and capped by the memory budget; the scores are
only ever kept whole by a temperature sweep, when they fit that budget. So
memory stays bounded whatever N is.

The parts: ``rows`` reads blocks of input rows onto the device; ``candidates``
holds one candidate source per negative mode, which scores a query block against
its candidates block by block; ``accumulators`` folds those blocks into per-query
state; this module plans the blocks, runs the passes and gathers the results.

Inputs are row-sliceable (NumPy arrays, tensors, or the file readers of io.py);
only the rows of the current block are read. Everything here is torch: no files, no
printing. The loss is differentiable when the inputs are tensors that require
grad (memory then grows with the graph autograd keeps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum

import torch

from .accumulators import BlockResult, RunningState
from .binned import MIN_SCALES, Bins, bin_width, table_bytes
from .candidates import CandidateIds as CandidateIds
from .candidates import (
    CandidateSource,
    InBatchCandidates,
    Matching,
    PairedCandidates,
    PooledCandidates,
    QueueCandidates,
    ScoredBlock,
    SharedCandidates,
)
from .errors import UsageError, arg
from .rows import Positives, RowReader
from .rows import Rows as Rows
from .rows import RowSource as RowSource
from .similarity import Similarity, dtype_name, paired, prepare_rows, reduction_dtype

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
    IN_BATCH_SHARED = "in-batch+shared"


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
    top_k: int = 0
    """Keep each query's ``top_k`` best-scoring candidates (after exclusions), in the same
    pass."""


@dataclass(frozen=True)
class PerSampleScores:
    """Per-sample results of one pass. Shapes: N queries, T temperatures.

    ``hardest_negative_index`` indexes the negatives as the mode defines them:
    a row of the negatives file (shared), a position 0..M-1 among the query's
    own negatives (paired), a row of the positives (in-batch), or, in-batch with
    paired negatives, a row of the positives below N and ``N + row·M + j`` for
    hard negative j of a row, and in-batch with shared negatives, a row of the
    positives below N and ``N + k`` for row k of the shared negatives. It is -1
    when a query has no negative.
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
    top_scores: torch.Tensor | None = None
    """(N, k) with ``top_k``: the best candidates' scores, best first (−inf where a query
    has fewer than k candidates)."""
    top_index: torch.Tensor | None = None
    """(N, k) int64: their indices, numbered as ``hardest_negative_index``."""




def negative_mode(negatives: Rows | None, in_batch: bool) -> NegativeMode:
    """The mode implied by the negatives' shape and the in-batch flag."""
    if negatives is None:
        return NegativeMode.IN_BATCH
    if negatives.ndim == 2:
        return NegativeMode.IN_BATCH_SHARED if in_batch else NegativeMode.SHARED
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
    (shared) or (N, M, d) (paired); with ``options.in_batch``, the negatives are seen
    next to the batch's positives. Inputs must already be validated (finite,
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
        raise UsageError(f"{arg('symmetric')} works with in-batch negatives only (leave out "
                         f"{arg('neg')})")
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
    inverse = _inverse_temperatures(temperatures, reduction_dtype(options.dtype))
    scales = torch.tensor(inverse, dtype=reduction_dtype(options.dtype), device=options.device)
    picks_rows = _picks_rows(options.device)
    width = binned_width(source, temperatures)
    bins = (None if width is None
            else Bins.for_fold(width, source.query_block, inverse, moments_from))
    # Results go straight into full-length tensors: many small blocks kept alive between
    # large temporaries would fragment the heap and hold on to memory.
    merged: dict[str, torch.Tensor] = {}
    done = 0
    with float_modes(options):
        for block in source.query_blocks():
            state = RunningState(block.positive_score, scales, moments_from, picks_rows,
                                 options.top_k, bins)
            for scored in block.candidates:
                state.update(scored)
            low, high = block.start - source.first_row, block.stop - source.first_row
            _merge(merged, state.finish(), source.rows, low, high)
            done = high
            if on_rows_done is not None:
                on_rows_done(high - low)
            if first_rows is not None and high >= first_rows:
                break
    merged = {key: value[:done] for key, value in merged.items()}
    unbeaten = merged["hardest_negative_score"] <= merged["positive_score"]
    return PerSampleScores(mode=source.mode, positive_unbeaten=unbeaten.detach(), **merged)


def binned_width(
    source: SimilarityPass | CachedPass, temperatures: Sequence[float]
) -> float | None:
    """The bin width when a fold's exponential sums at these temperatures are better taken
    from histograms of the scores (``binned``; the softmax moments then cost no more
    exponentials either): many temperatures, bounded float32 scores on the CPU, and a
    table that fits a quarter of the memory budget. None for one exponential per score
    and temperature."""
    options = source.options
    if (len(temperatures) < MIN_SCALES or options.device.type != "cpu"
            or options.similarity is not Similarity.COSINE
            or reduction_dtype(options.dtype) != torch.float32):
        return None
    width = bin_width([1.0 / t for t in temperatures])
    if (width is None or table_bytes(source.query_block, width, len(temperatures))
            > options.max_memory // 4):
        return None
    return width


def _merge(
    merged: dict[str, torch.Tensor], result: BlockResult, rows: int, low: int, high: int
) -> None:
    """Write a query block's results into rows [low, high) of the full-length tensors."""
    for field in fields(result):
        value = getattr(result, field.name)
        if value is None:
            continue
        if field.name not in merged:
            merged[field.name] = value.new_empty((rows, *value.shape[1:]))
        merged[field.name][low:high] = value


def _inverse_temperatures(temperatures: Sequence[float], dtype: torch.dtype) -> list[float]:
    """1/τ for each temperature, refused unless it is a normal number of the ``dtype``
    scores are reduced in: a scale that overflows makes every logit infinite, and one below
    the smallest normal number is flushed to 0 by the CPU, which turns the −inf of an
    excluded candidate into NaN."""
    limits, name = torch.finfo(dtype), dtype_name(dtype)
    wider = f", or {arg('dtype')} float64" if dtype != torch.float64 else ""
    inverse = [1.0 / t for t in temperatures]
    for temperature, scale in zip(temperatures, inverse, strict=True):
        if scale < limits.tiny:
            raise UsageError(f"temperature {temperature:g} is too large for {name} scores: "
                             f"1/τ is below the smallest normal {name} ({limits.tiny:.3g}); "
                             f"use a temperature below {1 / limits.tiny:.3g}{wider}")
        if scale > limits.max:
            raise UsageError(f"temperature {temperature:g} is too small for {name} scores: "
                             f"1/τ overflows {name}; use a temperature above "
                             f"{1 / limits.max:.3g}{wider}")
    return inverse


def _picks_rows(device: torch.device) -> bool:
    """Whether rank counting and hardest-negative search are narrowed to the rows that need
    them, which means waiting for the flags that pick them: on the CPU, yes; a GPU is
    better off doing every row than stalling its queue."""
    return device.type == "cpu"


@contextlib.contextmanager
def float_modes(options: EngineOptions) -> Iterator[None]:
    """TF32 matrix products on CUDA only when asked for; on the CPU, denormal floats are
    flushed to zero meanwhile: exp(s·(x − max)) of far negatives would otherwise produce
    them, and arithmetic on them is many times slower (they are below 1e-38, next to a
    sum of at least 1). Either way the caller's setting is restored."""
    if options.device.type != "cuda":
        previous = flushes_denormals()
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(previous)
        return
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = options.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def flushes_denormals() -> bool:
    """Whether the CPU flushes denormal floats to zero now (``torch.set_flush_denormal``,
    which has no getter): half the smallest normal float32 is a denormal, which an
    arithmetic result keeps unless they are flushed.

    >>> previous = flushes_denormals()
    >>> _ = torch.set_flush_denormal(False)
    >>> flushes_denormals()
    False
    >>> _ = torch.set_flush_denormal(previous)
    """
    smallest_normal = torch.tensor(torch.finfo(torch.float32).tiny)
    return bool(smallest_normal / 2 == 0)


def _mean_or_none(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None or b is None else (a + b) / 2


@dataclass(frozen=True)
class BlockPlan:
    """How many queries, and how many candidates (0: paired negatives, scored with their
    queries), a block holds."""

    query_block: int
    candidate_block: int


def plan_blocks(
    n: int, dim: int, mode: NegativeMode, paired_negatives: int, device_type: str,
    max_memory: int, batch_size: int | None,
) -> BlockPlan:
    """Block sizes for ``n`` queries of dimension ``dim``: sized for the CPU's cache, or on
    a GPU as large as the memory budget allows (large products keep it busy, and each
    block is folded whole); the budget only ever shrinks them. ``paired_negatives`` is M
    for paired negatives (N, M, d).

    >>> plan_blocks(100_000, 768, NegativeMode.IN_BATCH, 0, "cpu", 2**29, None)
    BlockPlan(query_block=512, candidate_block=2560)
    >>> plan_blocks(100_000, 768, NegativeMode.PAIRED, 16, "cpu", 2**29, None)
    BlockPlan(query_block=336, candidate_block=0)
    """
    on_gpu = device_type != "cpu"
    budget = max_memory if on_gpu else min(max_memory, _BLOCK_BYTES)
    per_score = _GPU_BYTES_PER_SCORE if on_gpu else _BYTES_PER_SCORE
    if mode is NegativeMode.PAIRED:
        per_query = paired_negatives * (dim + per_score)
        return BlockPlan(max(1, min(n, budget // max(per_query * 4, 1))), 0)
    query_block = max(1, min(n, _GPU_QUERY_BLOCK if on_gpu else _QUERY_BLOCK, batch_size or n))
    budget_scores = max(budget // per_score, _MIN_BLOCK * _MIN_BLOCK)
    query_block = min(query_block, budget_scores // _MIN_BLOCK)
    candidate_block = min(_GPU_CANDIDATE_BLOCK if on_gpu else _CANDIDATE_BLOCK,
                          budget_scores // query_block)
    if candidate_block > _ROUND_BLOCK:  # matrix products run faster on round shapes
        candidate_block -= candidate_block % _ROUND_BLOCK
    return BlockPlan(query_block, max(_MIN_BLOCK, candidate_block))


@dataclass
class QueryBlock:
    """Rows [start, stop) of the queries, their positives' scores and their candidates."""

    start: int
    stop: int
    positive_score: torch.Tensor  # (B,)
    candidates: Iterable[ScoredBlock]


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
        paired_negatives = (int(negatives.shape[1])
                            if negatives is not None and negatives.ndim == 3 else 0)
        plan = plan_blocks(self.n, self.dim, mode, paired_negatives, options.device.type,
                           options.max_memory, options.batch_size)
        self.query_block, self.candidate_block = plan.query_block, plan.candidate_block
        self.reader = RowReader(options.similarity, options.dtype, options.device)
        in_batch = mode in (NegativeMode.IN_BATCH, NegativeMode.IN_BATCH_PAIRED,
                            NegativeMode.IN_BATCH_SHARED)
        self.positives = Positives(positive, self.reader,
                                   keep=in_batch and self.n * self.dim * 8 <= options.max_memory)
        self.candidates = self._candidate_source()
        self.num_scores = self.rows * self.candidates.per_query
        self.score_bytes = self.num_scores * reduction_dtype(options.dtype).itemsize
        """Bytes the scores take when kept (``cached``): they are kept in the compute dtype,
        widened to float32 where they tie with the positive, so at most this."""

    def _candidate_source(self) -> CandidateSource:
        matching = Matching(self.ids, self.options.mask_duplicates)
        in_batch = InBatchCandidates(self.positives, self.reader, matching, self.candidate_block,
                                     self.options.batch_size)
        if self.mode is NegativeMode.IN_BATCH:
            return in_batch
        if self.negatives is None:
            raise UsageError(f"{self.mode} negatives need a negatives array ({arg('neg')})")
        if self.mode is NegativeMode.SHARED:
            return SharedCandidates(self.negatives, self.reader, matching, self.candidate_block)
        if self.mode is NegativeMode.IN_BATCH_SHARED:
            return QueueCandidates(in_batch, SharedCandidates(
                self.negatives, self.reader, matching, self.candidate_block))
        if self.mode is NegativeMode.PAIRED:
            return PairedCandidates(self.negatives, self.reader, matching)
        return PooledCandidates(in_batch, self.negatives, self.reader, matching,
                                self.candidate_block)

    def _batches(self) -> Iterator[tuple[int, int]]:
        """The batches that hold this pass's queries."""
        size = self.options.batch_size or self.n
        for start in range(0, self.n, size):
            stop = min(start + size, self.n)
            if stop > self.first_row and start < self.first_row + self.rows:
                yield start, stop

    def query_blocks(self) -> Iterator[QueryBlock]:
        """Query blocks in order; each block's candidates are computed as they are iterated."""
        similarity = self.options.similarity
        for batch in self._batches():
            low = max(batch[0], self.first_row)
            high = min(batch[1], self.first_row + self.rows)
            for start in range(low, high, self.query_block):
                stop = min(start + self.query_block, high)
                queries = prepare_rows(self.reader.raw(self.query, start, stop), similarity)
                positives = self.positives.block(start, stop)
                positive_score = paired(queries, positives.raw.unsqueeze(1), similarity)[:, 0]
                candidates = self.candidates.blocks(queries, positives, positive_score, start,
                                                    stop, batch)
                yield QueryBlock(start, stop, positive_score, candidates)

    def cached(self) -> CachedPass:
        """All of this pass's scores, computed once and kept in memory."""
        blocks = [QueryBlock(b.start, b.stop, b.positive_score, list(b.candidates))
                  for b in self.query_blocks()]
        return CachedPass(blocks, self.mode, self.options, self.first_row, self.rows)


@dataclass
class CachedPass:
    """A similarity pass whose score blocks are all in memory, to fold again cheaply."""

    blocks: list[QueryBlock]
    mode: NegativeMode
    options: EngineOptions
    first_row: int
    rows: int

    @property
    def query_block(self) -> int:
        """Queries in the largest block."""
        return max((b.stop - b.start for b in self.blocks), default=0)

    def query_blocks(self) -> Iterator[QueryBlock]:
        return iter(self.blocks)
