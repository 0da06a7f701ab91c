"""Similarity functions on tensors: cosine, dot and negative squared L2.

Each similarity is split into a per-row preparation (``prepare_rows``, applied
once to every block read) and a score between prepared rows, so that a block of
candidates is normalised once and then compared with many queries. The scores of
a query against many candidates (``pairwise``) and against one candidate per row
(``paired``) are computed the same way, up to the order of the float additions.

Cosine is safe at any magnitude: a row whose norm would overflow, or whose squares
would underflow (or be flushed to zero as denormals), is first multiplied by a power
of two. That is exact, so it changes no bit of the result for any row whose norm
could be taken directly; such rows are found from the norms, at no extra pass.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch

from .errors import InputError, arg


class Similarity(StrEnum):
    """How a query and a candidate are compared."""

    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"


def prepare_rows(rows: torch.Tensor, similarity: Similarity) -> torch.Tensor:
    """Return rows ready for scoring: L2-normalised for cosine, unchanged otherwise.

    Shape: (..., d) → (..., d). Zero-norm rows must be rejected before this point.

    >>> prepare_rows(torch.tensor([[3.0, 4.0]]), Similarity.COSINE)
    tensor([[0.6000, 0.8000]])
    >>> prepare_rows(torch.tensor([[3e-30, 4e-30]]), Similarity.COSINE)  # squares underflow
    tensor([[0.6000, 0.8000]])
    """
    if similarity is Similarity.COSINE:
        norms: torch.Tensor = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        unsafe = _unsafe_norms(norms, rows)
        if unsafe is not None:
            rows = _scaled_by_powers_of_two(rows, unsafe)
            norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        return rows / norms
    return rows


def rows_for_dtype(rows: torch.Tensor, dtype: torch.dtype, similarity: Similarity) -> torch.Tensor:
    """Rows ready to be cast to a narrower ``dtype`` without overflowing or vanishing: for
    cosine, each row whose largest magnitude lies outside the normal range of ``dtype`` is
    multiplied, in its own precision, by a power of two (which leaves its cosine unchanged).
    Other rows, other similarities and casts that do not narrow are left as they are.

    >>> rows = torch.tensor([[3e39, 4e39]], dtype=torch.float64)
    >>> rows_for_dtype(rows, torch.float32, Similarity.COSINE).to(torch.float32)
    tensor([[0.5510, 0.7347]])
    """
    if similarity is not Similarity.COSINE or not rows.is_floating_point():
        return rows
    limits, given = torch.finfo(dtype), torch.finfo(rows.dtype)
    if limits.max >= given.max and limits.tiny <= given.tiny:
        return rows  # every value of the rows' dtype is a normal value of the new one
    lowest, highest = torch.aminmax(rows.detach(), dim=-1, keepdim=True)
    peak = torch.maximum(highest, -lowest)
    unsafe = (peak > limits.max / 2) | (peak < limits.tiny / limits.eps)
    if not bool(unsafe.any()):
        return rows
    return _scaled_by_powers_of_two(rows, unsafe)


def pairwise(
    queries: torch.Tensor, candidates: torch.Tensor, similarity: Similarity
) -> torch.Tensor:
    """Scores of every query against every candidate: (B, d) × (C, d) → (B, C).

    Inputs are prepared rows. The product runs in the inputs' dtype. Cosine and dot
    scores come back in it, so that half-precision scores can be widened to float32
    a cache-sized piece at a time where they are used; L2 scores come back in float32
    (float64 for float64 inputs).

    >>> q = torch.tensor([[1.0, 0.0]]); c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> pairwise(q, c, Similarity.DOT)
    tensor([[1., 0.]])
    >>> pairwise(q, c, Similarity.L2)
    tensor([[ 0., -5.]])
    """
    scores = queries @ candidates.T
    if similarity is Similarity.L2:
        scores = scores.to(reduction_dtype(queries.dtype))
        return 2 * scores - _squared_norms(queries)[:, None] - _squared_norms(candidates)[None, :]
    return scores


def paired(
    queries: torch.Tensor, candidates: torch.Tensor, similarity: Similarity
) -> torch.Tensor:
    """Scores of each query against its own candidates: (B, d) × (B, M, d) → (B, M).

    Queries are prepared rows; candidates are raw rows (for cosine they are divided by
    their norms here, which saves writing a normalised copy of them). A candidate
    identical to another gets the identical score: every row goes through the same
    arithmetic, whatever the block size.

    >>> q = torch.tensor([[1.0, 0.0]]); c = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    >>> paired(q, c, Similarity.DOT)
    tensor([[2., 0.]])
    >>> paired(q, c, Similarity.COSINE)
    tensor([[1., 0.]])
    """
    dtype = reduction_dtype(queries.dtype)
    if similarity is Similarity.COSINE:
        norms: torch.Tensor = torch.linalg.vector_norm(candidates, dim=-1, dtype=dtype)
        unsafe = _unsafe_norms(norms, candidates)
        if unsafe is not None:
            candidates = _scaled_by_powers_of_two(candidates, unsafe[..., None])
            norms = torch.linalg.vector_norm(candidates, dim=-1, dtype=dtype)
        return (candidates * queries.unsqueeze(1)).sum(dim=-1, dtype=dtype) / norms
    scores = (candidates * queries.unsqueeze(1)).sum(dim=-1, dtype=dtype)
    if similarity is Similarity.L2:
        return 2 * scores - _squared_norms(queries)[:, None] - _squared_norms(candidates)
    return scores


def _unsafe_norms(norms: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """Where ``norms`` (of ``rows``) may be wrong: infinite (the squares overflowed), or so
    small that the squares of entries within the precision of the largest may have
    underflowed; None when every norm is safe (the common case, one check)."""
    accumulated = torch.finfo(reduction_dtype(rows.dtype))
    given = torch.finfo(rows.dtype)
    # The largest entry is at least norm/√d; entries down to eps times it must square to
    # normal numbers, and the norm itself must be a normal number of the rows' dtype.
    floor = max(math.sqrt(rows.shape[-1] * accumulated.tiny) / accumulated.eps,
                given.tiny / given.eps)
    unsafe = ~((norms >= floor) & (norms <= given.max))
    return unsafe if bool(unsafe.any()) else None


def _scaled_by_powers_of_two(rows: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """``rows`` with each row where ``which`` holds (shape (..., 1)) multiplied by the power
    of two that brings its largest magnitude into [0.5, 1). Multiplying by a power of two
    is exact, so the ratios between a row's entries, and its cosines, are unchanged."""
    _refuse_flushed(rows, which)
    peak = rows.detach().abs().amax(dim=-1, keepdim=True).to(torch.float64)
    _, exponent = torch.frexp(peak)  # peak = m·2^exponent, 0.5 ≤ m < 1
    exponent = torch.where(which & (peak > 0) & torch.isfinite(peak), exponent, 0)
    # Two factors, each a power of two that the rows' dtype holds exactly.
    half = torch.div(exponent, 2, rounding_mode="floor")
    one = torch.ones_like(peak)
    first = torch.ldexp(one, -half).to(rows.dtype)
    second = torch.ldexp(one, half - exponent).to(rows.dtype)
    return rows * first * second


_BITS = {torch.float32: (torch.int32, 23, 0xFF), torch.float64: (torch.int64, 52, 0x7FF)}
"""Per float dtype: the integer of its width, its fraction bits and its exponent mask."""


def _refuse_flushed(rows: torch.Tensor, which: torch.Tensor) -> None:
    """Refuse rows (where ``which`` holds) with denormal values that their largest value
    does not dwarf: the CPU flushes denormals to zero while scoring (scaling them up reads
    them as zero too), which would turn such a row. Read from the bits, which flushing
    does not touch."""
    layout = _BITS.get(rows.dtype)
    if layout is None:
        return
    ints, fraction_bits, mask = layout
    bits = rows.detach()[which[..., 0]].contiguous().view(ints)
    exponent = (bits >> fraction_bits) & mask
    denormal = ((exponent == 0) & ((bits & ((1 << fraction_bits) - 1)) != 0)).any(dim=-1)
    # A row whose largest value is 2^(fraction bits + 1) times the smallest normal or more
    # loses nothing within its precision when its denormals are flushed.
    small = exponent.amax(dim=-1) <= fraction_bits + 1
    if bool((denormal & small).any()):
        info = torch.finfo(rows.dtype)
        raise InputError(
            f"some rows hold only values near or below the smallest normal "
            f"{dtype_name(rows.dtype)} ({info.tiny:.1e}), which the CPU "
            "flushes to zero while scoring: multiply the vectors by a power of two (2^64, "
            "say) to score them exactly")


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype as messages and results name it.

    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


def check_score_range(similarity: Similarity, dtype: torch.dtype, dim: int,
                      query_norms: tuple[float, float], candidate_norm: float) -> None:
    """Refuse raw (``dot``, ``l2``) scores too small for ``dtype``: a product of two
    values below its smallest normal number is flushed to zero by the CPU, which loses
    up to ``dim`` such numbers per score, more than its rounding once a query's scale
    (its norm times the largest candidate norm; for ``l2`` the square of the larger of
    the two) is below ``dim`` · tiny / eps. ``query_norms`` are the queries' smallest
    non-zero norm and largest norm (zero rows score exactly 0 under ``dot``).

    >>> check_score_range(Similarity.DOT, torch.float32, 384, (1e-3, 1.0), 1.0)
    >>> check_score_range(Similarity.DOT, torch.float32, 384, (1e-19, 1e-19), 1e-19)
    Traceback (most recent call last):
    ...
    infonce_cli.errors.InputError: under similarity dot these vectors score below ...
    """
    if similarity is Similarity.COSINE:
        return
    limits, name = torch.finfo(dtype), dtype_name(dtype)
    floor = dim * limits.tiny / limits.eps
    smallest, largest = query_norms
    if similarity is Similarity.DOT:
        scale = smallest * candidate_norm
        what = "the smallest query norm times the largest candidate norm"
    else:
        scale, what = max(largest, candidate_norm) ** 2, "the square of the largest norm"
    if 0 < scale < floor:
        wider = f"{arg('dtype')} float64 or " if dtype != torch.float64 else ""
        raise InputError(
            f"under {arg('similarity')} {similarity.value} these vectors score below the "
            f"normal range of {name}, which the CPU flushes to zero ({what} is "
            f"{scale:.3g}, below {floor:.3g}): use {wider}multiply the vectors by a power "
            "of two (2^64, say)")


def _squared_norms(rows: torch.Tensor) -> torch.Tensor:
    return rows.to(reduction_dtype(rows.dtype)).square().sum(dim=-1)


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are reduced in: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32
