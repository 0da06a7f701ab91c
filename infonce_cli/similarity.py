"""Similarity functions on tensors: cosine, dot and negative squared L2.

Each similarity is split into a per-row preparation (``prepare_rows``, applied
once to every block read) and a score between prepared rows, so that a block of
candidates is normalised once and then compared with many queries. The scores of
a query against many candidates (``pairwise``) and against one candidate per row
(``rowwise``) are computed the same way, up to the order of the float additions.
"""

from __future__ import annotations

from enum import StrEnum

import torch


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
    """
    if similarity is Similarity.COSINE:
        norms: torch.Tensor = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        return rows / norms
    return rows


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
    scores = (candidates * queries.unsqueeze(1)).sum(dim=-1, dtype=dtype)
    if similarity is Similarity.COSINE:
        norms: torch.Tensor = torch.linalg.vector_norm(candidates, dim=-1, dtype=dtype)
        return scores / norms
    if similarity is Similarity.L2:
        return 2 * scores - _squared_norms(queries)[:, None] - _squared_norms(candidates)
    return scores


def _squared_norms(rows: torch.Tensor) -> torch.Tensor:
    return rows.to(reduction_dtype(rows.dtype)).square().sum(dim=-1)


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are reduced in: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32
