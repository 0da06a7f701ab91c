"""Sums of exponentials at many temperatures from one histogram of the scores.

A sweep needs, per query, Σ_j exp(s·x_j) at dozens of scales s = 1/τ; one exponential
per score and scale costs several times the similarity product itself. Cosine scores
are bounded (|x| ≤ 1), so each one is written exactly, in float32, as x = h·(r + δ) with
h a power of two, r an integer (its bin) and |δ| ≤ ½; then

    Σ_{j in bin r} exp(s·x_j) = exp(s·h·r) · Σ_{m ≤ M} (s·h)^m / m! · Σ_{j in bin r} δ_j^m

up to the remainder of the exponential's series, which the width h keeps below 2⁻²⁷
of the bin's sum at the largest scale (under float32's own rounding of the sum). One
pass over the scores keeps, per query and bin, the moments Σ δ^m for m = 0..M (M + 1
scatter-adds a score, whatever the number of temperatures); at the end of a query
block, the sums at every scale, and their first two derivatives in s that the
temperature fit needs, are small float64 matrix products over the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

ORDER = 4
"""M: the highest power of δ kept."""
MIN_SCALES = 16
"""Fewer scales than this are cheaper with one exponential per score and scale."""
_TOLERANCE = 2.0**-27
"""Bound on the series' remainder relative to a bin's sum at the largest scale."""
_BOUND = 1.125
"""Scores binned lie within ±this: cosines, with room for half-precision rounding."""
_NARROWEST = 2.0**-11
"""Narrower bins (scales above about 220, τ below about 0.0045) take exponentials."""
_CHUNK_SCORES = 2**18
"""Scores binned at a time: their work space stays in the CPU's cache."""
_ONE = torch.ones(1)
"""Expanded to count the scores in each bin."""


def bin_width(scales: Sequence[float]) -> float | None:
    """The widest power-of-two bin width whose series remainder at the largest scale is
    within tolerance, or None when such bins would be too narrow (too many).

    With y = s·h/2 ≥ |s·h·δ|, the remainder is at most e^y·y^(M+1)/(M+1)! of a term, and
    each term of the bin's sum is at least e^(−y) of its leading one.

    >>> bin_width([1.0, 20.0, 100.0]), bin_width([1000.0])
    (0.0009765625, None)
    """
    largest = max(scales)
    if largest <= 0:
        return None
    width = 2.0 ** math.floor(math.log2(2.0 / largest))
    while width >= _NARROWEST:
        y = largest * width / 2
        if math.exp(2 * y) * y ** (ORDER + 1) / math.factorial(ORDER + 1) <= _TOLERANCE:
            return width
        width /= 2
    return None


def table_bytes(rows: int, width: float, scales: int) -> int:
    """Bytes of the moment table of ``rows`` queries with bins of ``width``, and of the
    kernels for ``scales`` scales (at most three per scale)."""
    return (ORDER + 1) * _bins(width) * (rows * 4 + 3 * scales * 8)


@dataclass(frozen=True)
class Bins:
    """What every query block of one fold shares: the bin width, a zeroed moment table
    for up to ``rows`` queries (each block leaves it zeroed), and the kernels that turn
    the moments into sums at the fold's scales (``kernel``).

    Sums are taken relative to the top of the table, C = the highest bin's centre: with
    |x| ≤ 1.125 and s ≤ 220, exp(s·(x − C)) stays a normal float64."""

    width: float
    scales: torch.Tensor  # (T,) float64, the probes last
    table: torch.Tensor  # (M+1, rows, bins) float32
    loss_kernel: torch.Tensor  # (M+1, bins, T) float64
    moment_kernel: torch.Tensor  # (M+1, bins, 3·P): F, F' and F'' at the probes
    space: dict[str, torch.Tensor] = field(default_factory=dict)
    """Work space for binning, reused by every chunk of every block."""

    @staticmethod
    def for_fold(width: float, rows: int, scales: Sequence[float], moments_from: int) -> Bins:
        s = torch.tensor(scales, dtype=torch.float64)
        bins = _bins(width)
        below_top = (torch.arange(bins, dtype=torch.float64) - (bins - 1)) * width
        probes = s[moments_from:]
        return Bins(width, s, torch.zeros((ORDER + 1, rows, bins)),
                    kernel(width, s, below_top, 0),
                    torch.cat([kernel(width, probes, below_top, n) for n in range(3)], dim=2))


def kernel(width: float, s: torch.Tensor, below_top: torch.Tensor,
           derivative: int) -> torch.Tensor:
    """(M+1, W, T): the weight of Σ δ^m in bin b in the ``derivative``-th derivative in s
    of F(s) = Σ_j exp(s·(x_j − C)) at each scale: d^n/ds^n [exp(s·r_b)·(s·h)^m/m!] with
    r_b = centre_b − C (``below_top``), by Leibniz's rule."""
    exponentials = torch.exp(below_top[:, None] * s)  # (W, T)
    blocks = []
    for m in range(ORDER + 1):
        factor = sum(math.comb(derivative, j) * below_top[:, None] ** (derivative - j)
                     * math.perm(m, j) * width**m * s ** (m - j) / math.factorial(m)
                     for j in range(min(derivative, m) + 1))
        blocks.append(factor * exponentials)
    return torch.stack(blocks)


def _bins(width: float) -> int:
    return 2 * _offset(width) + 1


def _offset(width: float) -> int:
    """Index of the bin centred on 0; bin 0 collects the excluded entries (−inf)."""
    return math.ceil(_BOUND / width) + 1


class BinnedSums:
    """Per query of a block: the moments of δ in each bin of its candidates' scores.

    The positive is not binned: its term is added exactly at the end.
    """

    def __init__(self, positive_score: torch.Tensor, bins: Bins) -> None:
        self.positive_score, self.bins, self.width = positive_score.detach(), bins, bins.width
        self.offset = _offset(bins.width)
        self.table = bins.table[:, :positive_score.shape[0]]

    def add(self, scores: torch.Tensor) -> None:
        """Bin a (B, C) block of candidate scores (−inf for the excluded ones), a few rows
        at a time."""
        columns = scores.shape[1]
        if not columns:
            return
        chunk = max(1, _CHUNK_SCORES // columns)
        for start in range(0, scores.shape[0], chunk):
            stop = min(start + chunk, scores.shape[0])
            self._add_rows(start, scores[start:stop])

    def _add_rows(self, start: int, scores: torch.Tensor) -> None:
        shape = tuple(scores.shape)
        scaled = torch.mul(scores, 1.0 / self.width, out=self._take("scaled", shape))
        # Excluded entries (−inf) land in bin 0, which is never read; scores cannot reach it.
        scaled.clamp_(min=-self.offset)
        centre = torch.round(scaled, out=self._take("centre", shape))
        delta = scaled.sub_(centre)  # exact: both are multiples of the score's last bit
        index = self._take("index", shape, torch.int64).copy_(centre.add_(self.offset))
        table = self.table[:, start:start + shape[0]]
        table[0].scatter_add_(1, index, _ONE.expand(shape))
        table[1].scatter_add_(1, index, delta)
        square = torch.mul(delta, delta, out=centre)
        table[2].scatter_add_(1, index, square)
        power = torch.mul(square, delta, out=self._take("power", shape))
        table[3].scatter_add_(1, index, power)
        table[4].scatter_add_(1, index, torch.mul(square, square, out=power))

    def _take(self, name: str, shape: tuple[int, ...],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Work space of this shape, reused by every chunk of the fold."""
        size = math.prod(shape)
        buffer = self.bins.space.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self.bins.space[name] = torch.empty(size, dtype=dtype)
        return buffer[:size].view(shape)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per query: the loss at every scale of the fold (B, T); at its probes, the
        softmax mean and variance of x − x_pos (B, P); and Σ (x − x_pos) over the
        candidates (B,). All in the positive scores' dtype.

        F(s) = Σ_j exp(s·(x_j − C)) over the candidates and its derivatives in s are the
        moments in the bins in use (M+1, B, W) times the fold's kernels over those bins,
        summed over m, in float64.
        """
        dtype = self.positive_score.dtype
        bins = self.bins
        positive = self.positive_score.double()
        used = torch.nonzero(self.table[0, :, 1:].sum(dim=0)).squeeze(1) + 1
        self.table[:, :, 0] = 0  # the excluded entries
        low, high = (int(used[0]), int(used[-1]) + 1) if len(used) else (1, 1)
        moments = self.table[:, :, low:high].double()  # (M+1, B, W)
        self.table[:, :, low:high] = 0  # zeroed again for the next query block
        sums = torch.bmm(moments, bins.loss_kernel[:, low:high]).sum(dim=0)
        s = bins.scales
        top = (self.table.shape[2] - 1 - self.offset) * self.width
        positive_gap = positive - top  # x_pos − C
        # loss = log(1 + Σ_j exp(s·(x_j − x_pos))), 0 without candidates
        loss = torch.nn.functional.softplus(sums.log() - positive_gap[:, None] * s)
        centres = (torch.arange(low, high, dtype=torch.float64) - self.offset) * self.width
        gap_sum = (moments[0] @ centres + self.width * moments[1].sum(dim=1)
                   - positive * moments[0].sum(dim=1))
        probes = bins.moment_kernel.shape[2] // 3
        evaluated = torch.bmm(moments, bins.moment_kernel[:, low:high]).sum(dim=0)
        total, slope, curve = (evaluated[:, n * probes:(n + 1) * probes] for n in range(3))
        # The positive's own term, exp(s·(x_pos − C)).
        probe_scales = s[len(s) - probes:]
        own = torch.exp(positive_gap[:, None] * probe_scales)
        total = total + own
        slope = slope + positive_gap[:, None] * own
        curve = curve + positive_gap.square()[:, None] * own
        mean = slope / total  # E[x − C]
        variance = (curve / total - mean.square()).clamp_min(0)
        gap = mean - positive_gap[:, None]
        return loss.to(dtype), gap.to(dtype), variance.to(dtype), gap_sum.to(dtype)
