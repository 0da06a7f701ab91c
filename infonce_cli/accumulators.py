"""Per-query running state of one query block, folded one candidate block at a time.

Three accumulators, composed by ``RunningState``:

- ``LogSumExp``: per query and scale s = 1/τ, the running maximum score and
  Σ exp(s·(x − max)), from which the loss follows;
- ``Ranks``: the candidates counted and masked, the negatives scoring at or above
  the positive, and the hardest negative;
- ``Moments``: at the probe scales, the softmax-weighted first and second moments
  of x − x_pos and their plain sum, which give the slope and curvature of the loss
  in s (what the temperature fit needs).

The exponentials are shared: one cache-sized chunk of scores at a time, each scale's
weights are computed once and summed, then multiplied into the moments. Scratch
space is reused by every chunk, scale and candidate block of the query block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .binned import BinnedSums, Bins
from .candidates import ScoredBlock

_CACHE_SCORES = 2**18
"""Scores per row chunk of a block: small enough to stay in the CPU's cache."""

EXP_FLOOR = -80.0
"""Exponents are clamped to at least this on the CPU, which computes exp() of arguments
below about −87 (denormal or zero results) dozens of times slower. exp(−80) ≈ 2e−35 is far
below float resolution next to the sums, which are at least 1 (the largest score's term)."""


@dataclass(frozen=True)
class BlockResult:
    """Per-query results of one query block of B queries at T temperatures (P of them
    probes, the last ones), as in ``engine.PerSampleScores``."""

    loss: torch.Tensor  # (B, T)
    positive_score: torch.Tensor  # (B,)
    hardest_negative_score: torch.Tensor  # (B,)
    hardest_negative_index: torch.Tensor  # (B,) int64
    rank: torch.Tensor  # (B,) int64
    num_candidates: torch.Tensor  # (B,) int64
    masked: torch.Tensor  # (B,) int64
    softmax_gap: torch.Tensor | None = None  # (B, P)
    softmax_variance: torch.Tensor | None = None  # (B, P)
    mean_candidate_gap: torch.Tensor | None = None  # (B,)
    top_scores: torch.Tensor | None = None  # (B, k)
    top_index: torch.Tensor | None = None  # (B, k) int64


class Scratch:
    """Named work space, reused by every block of a query block (grown when too small)."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Space of this shape, in the dtype and on the device of ``like``."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[name] = self.like.new_empty(size)
        return buffer[:size].view(shape)


class LogSumExp:
    """Per query and scale s: the running maximum score and Σ exp(s·(x − max)).

    The positive is in every candidate set; it is counted up front, so the state starts
    at max = x_pos and sum = exp(0) = 1 for every scale.
    """

    def __init__(self, positive_score: torch.Tensor, scales: torch.Tensor) -> None:
        self.positive_score, self.scales = positive_score, scales
        self.maximum = positive_score.detach().clone()
        # exp(s·(x_pos − max)) = 1, written out so that autograd sees the positive's term
        # (copied: the sums are updated in place, and exp keeps its result for the gradient).
        self.sums = torch.exp((positive_score - self.maximum)[:, None] * scales).clone()

    def raise_maximum(self, block_max: torch.Tensor) -> torch.Tensor:
        """Take a block's maxima into the running maximum (without autograd); returns the
        factors exp(s·(old − new max)), (B, T), that the sums must be multiplied by."""
        new_maximum = torch.maximum(self.maximum, block_max)
        rescale = torch.exp((self.maximum - new_maximum)[:, None] * self.scales)
        self.maximum = new_maximum
        return rescale

    def rescale(self, factors: torch.Tensor) -> None:
        self.sums = self.sums * factors

    def add(self, rows: slice, sums: torch.Tensor) -> None:
        self.sums[rows] += sums

    def loss(self) -> torch.Tensor:
        """(B, T): log Σ exp(s·x) − s·x_pos."""
        # (max − x_pos)·s in one product: exactly 0 when the positive is the maximum.
        return torch.log(self.sums) + (self.maximum - self.positive_score)[:, None] * self.scales


class Moments:
    """At the probe scales (columns ``first`` on of the scales), the running sums of
    w·(x − x_pos) and w·(x − x_pos)² with w = exp(s·(x − max)), and Σ (x − x_pos) over
    the candidates (0 for excluded ones)."""

    def __init__(self, positive_score: torch.Tensor, sums: torch.Tensor, first: int) -> None:
        self.positive_score, self.first = positive_score, first
        self.first_moment = torch.zeros_like(sums[:, first:])
        self.second_moment = torch.zeros_like(sums[:, first:])
        self.gap_sum = torch.zeros_like(positive_score)

    def rescale(self, factors: torch.Tensor) -> None:
        """Follow the sums' rescaling (``factors`` for every scale)."""
        self.first_moment = self.first_moment * factors[:, self.first:]
        self.second_moment = self.second_moment * factors[:, self.first:]

    def gaps(self, rows: slice, scores: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """x − x_pos of the queries ``rows`` (0 for the excluded entries, whose scores are
        −inf), into ``out`` when given; their sums are added up."""
        positive_score = self.positive_score[rows, None]
        gap = scores - positive_score if out is None else torch.sub(scores, positive_score,
                                                                    out=out)
        gap = gap.nan_to_num(neginf=0.0) if out is None else gap.nan_to_num_(neginf=0.0)
        self.gap_sum[rows] += gap.sum(dim=1)
        return gap

    def add(self, rows: slice, firsts: torch.Tensor, seconds: torch.Tensor) -> None:
        self.first_moment[rows] += firsts
        self.second_moment[rows] += seconds

    def finish(
        self, sums: torch.Tensor, num_candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The softmax mean and variance of x − x_pos at the probes, (B, P) each, from the
        running ``sums`` (B, T); and the plain mean of x − x_pos over C_i, (B,)."""
        probe_sums = sums[:, self.first:]
        mean_gap = self.first_moment / probe_sums
        variance = self.second_moment / probe_sums - mean_gap.square()
        return mean_gap, variance.clamp_min(0), self.gap_sum / num_candidates


class Ranks:
    """Per query: the candidates counted and masked, the negatives scoring at or above the
    positive (ties count against it) and the hardest negative (its score and index).

    With ``picks_rows`` (the CPU), rank counting and the hardest-negative search are
    narrowed to the rows that need them, which means waiting for the flags that pick
    them; a GPU is better off doing every row than stalling its queue.
    """

    def __init__(self, positive_score: torch.Tensor, picks_rows: bool, scratch: Scratch) -> None:
        rows = positive_score.shape[0]
        device, dtype = positive_score.device, positive_score.dtype
        self.positive_score, self.picks_rows, self.scratch = positive_score, picks_rows, scratch
        self.at_or_above = torch.zeros(rows, dtype=torch.int64, device=device)
        self.num_candidates = torch.ones(rows, dtype=torch.int64, device=device)
        self.masked = torch.zeros(rows, dtype=torch.int64, device=device)
        self.hardest_score = torch.full((rows,), -math.inf, dtype=dtype, device=device)
        self.hardest_index = torch.full((rows,), -1, dtype=torch.int64, device=device)

    def count(self, block: ScoredBlock, columns: int) -> None:
        """Count a block's candidates (less the excluded entries) and its masked ones."""
        self.num_candidates += columns
        if block.excluded is not None:
            self.num_candidates.index_add_(
                0, block.excluded[0], torch.full_like(block.excluded[0], -1))
        if block.masked_rows is not None:
            self.masked.index_add_(0, block.masked_rows, torch.ones_like(block.masked_rows))

    def update(self, scores: torch.Tensor, block_max: torch.Tensor, first_index: int) -> None:
        """Fold a block's (detached) scores, with their row maxima, into ranks and hardest
        negatives."""
        self.count_at_or_above(scores, block_max)
        self._track_hardest(scores, block_max, first_index)

    def count_at_or_above(self, scores: torch.Tensor, block_max: torch.Tensor) -> None:
        """Count the negatives scoring at or above the positive. When picking rows, only
        those whose block maximum reaches their positive are compared (usually few)."""
        positive = self.positive_score.detach()
        chosen = None
        if self.picks_rows:
            chosen = torch.nonzero(block_max >= positive).squeeze(1)
            if chosen.numel() == 0:
                return
            if chosen.numel() < scores.shape[0]:
                scores, positive = scores[chosen], positive[chosen]
        # Comparing into floats and summing them is several times faster than with bools.
        compared = torch.ge(scores, positive[:, None],
                            out=self.scratch.take("compared", tuple(scores.shape)))
        counts = compared.sum(dim=1).to(torch.int64)
        if chosen is None:
            self.at_or_above += counts
        else:
            self.at_or_above.index_add_(0, chosen, counts)

    def _track_hardest(
        self, scores: torch.Tensor, block_max: torch.Tensor, first_index: int
    ) -> None:
        """Keep each query's hardest negative: its score and its index in the mode's
        numbering. When picking rows, only those whose hardest negative changes are
        searched for its column."""
        changed = block_max > self.hardest_score
        if not self.picks_rows:
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


@dataclass
class _ChunkSpace:
    """Reused (rows, C) work space for folding row chunks."""

    shifted: torch.Tensor
    work: torch.Tensor
    gap: torch.Tensor | None = None

    def fitting(self, rows: int) -> _ChunkSpace:
        return _ChunkSpace(self.shifted[:rows], self.work[:rows],
                           None if self.gap is None else self.gap[:rows])


class TopK:
    """Each query's k best-scoring candidates so far, best first, equal scores in index
    order (−inf and −1 while it has fewer).

    A block is reduced to the maxima of its groups of ``_GROUP`` columns (which also give
    its row maxima); only the groups whose maximum beats a query's k-th best at the
    last merge are looked into, and their entries that beat it are set aside. The entries
    set aside are merged into the lists by one small stable sort once there are about k
    per query, and when the lists are read. Once the lists fill up few entries beat them,
    so a block costs little more than its maxima. Blocks come in index order, so an entry
    tying with the k-th best comes after it and does not enter; a k-th best from an older
    merge is at most the current one, so it only sets more entries aside."""

    def __init__(self, k: int, like: torch.Tensor) -> None:
        self.k = k
        self._scores = like.new_full((like.shape[0], k), -math.inf)
        self._index = torch.full((like.shape[0], k), -1, dtype=torch.int64, device=like.device)
        self._aside: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._aside_count = 0

    @property
    def scores(self) -> torch.Tensor:
        """(Q, k): the best scores, best first."""
        self._merge()
        return self._scores

    @property
    def index(self) -> torch.Tensor:
        """(Q, k) int64: their candidates' indices."""
        self._merge()
        return self._index

    def update(self, scores: torch.Tensor, first_index: int) -> torch.Tensor:
        """Fold in a (B, C) block whose first column is candidate ``first_index``; return
        its row maxima, which its group maxima give for free."""
        if not scores.numel():
            return scores.new_full(scores.shape[:1], -math.inf)
        grouped = in_groups(scores)
        group_max = grouped.amax(dim=2)
        entering = self._entering(scores, grouped, group_max)
        if entering is not None:
            row, column = entering
            self._aside.append((row, column + first_index, scores[row, column]))
            self._aside_count += len(row)
            if self._aside_count >= self.k * scores.shape[0]:
                self._merge()
        return group_max.amax(dim=1)

    def _merge(self) -> None:
        """Merge the entries set aside (per query in index order) into the lists."""
        if not self._aside:
            return
        row, index, value = (torch.cat(part) for part in zip(*self._aside, strict=True))
        if len(self._aside) > 1:  # several blocks' entries: by row, each in index order
            order = torch.argsort(row, stable=True)
            row, index, value = row[order], index[order], value[order]
        self._aside, self._aside_count = [], 0
        # The entries, packed to the left of each row in index order.
        rows = self._scores.shape[0]
        counts = torch.bincount(row, minlength=rows)
        place = torch.arange(len(row), device=row.device) - (counts.cumsum(0) - counts)[row]
        values = self._scores.new_full((rows, int(counts.max())), -math.inf)
        values[row, place] = value.to(values.dtype)
        indices = torch.full_like(values, -1, dtype=torch.int64)
        indices[row, place] = index
        merged = torch.cat([self._scores, values], dim=1)
        # A stable sort: equal scores keep their order, the running list's first.
        ordered, picked = torch.sort(merged, dim=1, descending=True, stable=True)
        self._scores, picked = ordered[:, :self.k], picked[:, :self.k]
        chosen = torch.cat([self._index, indices], dim=1).gather(1, picked)
        self._index = torch.where(torch.isfinite(self._scores), chosen, -1)

    def _entering(self, scores: torch.Tensor, grouped: torch.Tensor, group_max: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(row, column) of the block's entries that can enter the lists, row by row in
        column order (None when there are none): those above the row's k-th best at the
        last merge, and, while the lists fill up, at or above a bound on the block's own
        k-th best (ties included, so that the lowest indices can win)."""
        groups = grouped.shape[1]
        kth = self._scores[:, -1:].to(scores.dtype)
        passing = group_max > kth
        floor = None
        if int(passing.sum(dim=1).max()) > self.k:
            # Lists still filling: the block's k best lie in groups reaching the k-th
            # largest group maximum (at most the block's k-th best score), a tight bound
            # when there are many more groups than k; else the k-th best itself.
            floor = (group_max.topk(self.k, dim=1).values[:, -1:]
                     if groups >= 4 * self.k
                     else scores.topk(self.k, dim=1).values[:, -1:])
            passing &= group_max >= floor
        group_row, group = torch.nonzero(passing, as_tuple=True)
        if not len(group_row):
            return None
        entries = grouped[group_row, group]  # (G, _GROUP)
        enters = entries > kth[group_row]
        if floor is not None:
            enters &= entries >= floor[group_row]
        which, offset = torch.nonzero(enters, as_tuple=True)
        return (group_row[which], group[which] * _GROUP + offset) if len(which) else None


_GROUP = 64
"""Columns per group whose maximum decides whether ``TopK`` (and the corpus scan's
counts) look into them."""


def in_groups(scores: torch.Tensor) -> torch.Tensor:
    """(B, G, ``_GROUP``): a (B, C) block's columns in groups, the last one filled up with
    −inf (in a copy) when C is not a multiple of the group."""
    rows, width = scores.shape
    groups = -(-width // _GROUP)
    if width % _GROUP:
        padded = scores.new_full((rows, groups * _GROUP), -math.inf)
        padded[:, :width] = scores
        scores = padded
    return scores.reshape(rows, groups, _GROUP)


class RunningState:
    """The running state of one query block: log-sum-exp at every scale, ranks and hardest
    negatives, and, at the scales from ``moments_from`` on (the probes), the moments."""

    def __init__(
        self, positive_score: torch.Tensor, scales: torch.Tensor, moments_from: int,
        picks_rows: bool, top_k: int = 0, bins: Bins | None = None,
    ) -> None:
        self.positive_score, self.scales = positive_score, scales
        self.scale_values: list[float] = scales.tolist()
        self.moments_from = moments_from
        self.scratch = Scratch(positive_score)
        self.bins = (BinnedSums(positive_score, bins)
                     if bins is not None and not positive_score.requires_grad else None)
        self.log_sum_exp = LogSumExp(positive_score, scales)
        self.moments = (Moments(positive_score, self.log_sum_exp.sums, moments_from)
                        if moments_from < scales.shape[0] else None)
        self.ranks = Ranks(positive_score, picks_rows, self.scratch)
        self.top = TopK(top_k, positive_score.detach()) if top_k else None

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
            scores = self.scratch.take("widened", scores.shape).copy_(scores)
        with torch.no_grad():
            self.ranks.count(block, scores.shape[1])
            detached = scores.detach()
            if self.top is None:
                block_max = detached.amax(dim=1).to(dtype)
                self.ranks.update(detached, block_max, block.first_index)
            else:  # the top-k lists hold the hardest negative, so only ranks are counted
                block_max = self.top.update(detached, block.first_index).to(dtype)
                self.ranks.count_at_or_above(detached, block_max)
            if self.bins is not None:
                self.bins.add(detached)
                return
            rescale = self.log_sum_exp.raise_maximum(block_max)
        self.log_sum_exp.rescale(rescale)
        if self.moments is not None:
            self.moments.rescale(rescale)
        if scores.requires_grad:
            self._add_sums(slice(0, scores.shape[0]), scores.to(dtype), None)
            return
        chunk = (max(1, _CACHE_SCORES // max(1, scores.shape[1]))
                 if scores.device.type == "cpu" else scores.shape[0])  # a GPU takes it whole
        shape = (chunk, scores.shape[1])
        space = _ChunkSpace(self.scratch.take("shifted", shape), self.scratch.take("work", shape),
                            None if self.moments is None else self.scratch.take("gap", shape))
        with torch.no_grad():
            for start in range(0, scores.shape[0], chunk):
                rows = slice(start, min(start + chunk, scores.shape[0]))
                self._add_sums(rows, scores[rows], space.fitting(rows.stop - rows.start))

    def _add_sums(self, rows: slice, scores: torch.Tensor, space: _ChunkSpace | None) -> None:
        """Add the exponential sums (and the probes' moments) of the queries ``rows``."""
        gap = None
        if self.moments is not None:
            gap = self.moments.gaps(rows, scores, None if space is None else space.gap)
        maximum = self.log_sum_exp.maximum[rows, None]
        if space is None:
            sums, firsts, seconds = _exp_sums(scores - maximum, gap, self.scales,
                                              self.moments_from)
        else:
            shifted = torch.sub(scores, maximum, out=space.shifted)
            sums, firsts, seconds = _exp_sums_in_place(
                shifted, gap, self.scale_values, self.moments_from, space.work)
        self.log_sum_exp.add(rows, sums)
        if self.moments is not None:
            self.moments.add(rows, firsts, seconds)

    def finish(self) -> BlockResult:
        ranks = self.ranks
        moments: tuple[torch.Tensor | None, ...] = (None, None, None)
        if self.bins is not None:
            loss, gap, variance, gap_sum = self.bins.finish()
            if self.moments is not None:
                moments = (gap, variance, gap_sum / ranks.num_candidates)
        else:
            loss = self.log_sum_exp.loss()
            if self.moments is not None:
                moments = self.moments.finish(self.log_sum_exp.sums, ranks.num_candidates)
        hardest = ((ranks.hardest_score, ranks.hardest_index) if self.top is None
                   else (self.top.scores[:, 0], self.top.index[:, 0]))
        return BlockResult(
            loss=loss,
            positive_score=self.positive_score,
            hardest_negative_score=hardest[0],
            hardest_negative_index=hardest[1],
            rank=ranks.at_or_above + 1,
            num_candidates=ranks.num_candidates,
            masked=ranks.masked,
            softmax_gap=moments[0],
            softmax_variance=moments[1],
            mean_candidate_gap=moments[2],
            top_scores=None if self.top is None else self.top.scores,
            top_index=None if self.top is None else self.top.index,
        )


def _exp_sums(
    shifted: torch.Tensor, gap: torch.Tensor | None, scales: torch.Tensor, moments_from: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row and scale s: Σ exp(s·shifted), and for the scales from ``moments_from`` on
    (given ``gap``) Σ w·gap and Σ w·gap². Out of place, for autograd: (B, T, C) at once."""
    weights = torch.exp((shifted[:, None, :] * scales[:, None]).clamp(min=EXP_FLOOR))
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
        if on_cpu and scale * lowest < EXP_FLOOR:
            work.clamp_(min=EXP_FLOOR)
        work.exp_()
        torch.sum(work, dim=1, out=sums[index])
        if gap is not None and index >= moments_from:
            torch.sum(work.mul_(gap), dim=1, out=firsts[index - moments_from])
            torch.sum(work.mul_(gap), dim=1, out=seconds[index - moments_from])
    return sums.T, firsts.T, seconds.T
