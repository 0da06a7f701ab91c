"""Checks on loaded arrays: dtypes and ranks, matching rows and dimensions, NaN/Inf and
zero-norm rows (read in bounded chunks, however large the input)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from infonce_cli.errors import InputError, arg

if TYPE_CHECKING:
    from .loading import Embeddings
    from .npy import RowReader

    Rows: TypeAlias = np.ndarray[Any, Any] | RowReader

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_SCAN_BYTES = 16 * 2**20
"""How much of an array the value checks read at a time."""


def check_float_dtype(dtype: np.dtype[Any], label: str) -> None:
    """Refuse a dtype other than float16/32/64."""
    if dtype.type not in FLOAT_DTYPES:
        raise InputError(f"{label}: expected a float array (float16/32/64), got {dtype.name}")


def check_float_array(values: Rows, label: str, ndims: tuple[int, ...]) -> None:
    """Refuse an array that is not float, has a rank outside ``ndims`` or is empty."""
    check_float_dtype(values.dtype, label)
    if values.ndim not in ndims:
        wanted = " or ".join({2: "a 2-D float array (N, d)", 3: "a 3-D float array (N, M, d)"}[n]
                             for n in ndims)
        raise InputError(f"{label}: expected {wanted}, got shape {tuple(values.shape)}")
    if values.shape[0] == 0 or values.shape[-1] == 0 or 0 in values.shape:
        raise InputError(f"{label}: empty array of shape {tuple(values.shape)}")


def check_pairs(query: Embeddings, positive: Embeddings, negatives: Embeddings | None) -> None:
    """Refuse inputs whose row counts or dimensions do not line up."""
    n, dim = query.shape
    if positive.shape[0] != n:
        raise InputError(f"{positive.label}: has {positive.shape[0]} rows but {query.label} "
                         f"has {n}; row i of each must be a pair")
    for other in (positive, negatives):
        if other is not None and other.shape[-1] != dim:
            raise InputError(f"{other.label}: vectors have dimension {other.shape[-1]} but "
                             f"{query.label} has {dim}")
    if negatives is not None and len(negatives.shape) == 3 and negatives.shape[0] != n:
        raise InputError(f"{negatives.label}: paired negatives have {negatives.shape[0]} rows "
                         f"but {query.label} has {n}")


@dataclass(frozen=True)
class RowStats:
    """Row-level facts about an array, from one streaming scan."""

    rows: int
    non_finite_rows: int
    first_non_finite_row: int
    zero_norm_rows: int
    first_zero_norm_row: int
    norm_min: float
    norm_mean: float
    norm_max: float
    nonzero_norm_min: float = float("nan")
    """The smallest norm of a row that is not all zeros."""


def row_stats(
    values: Rows, norms: bool = True,
    rows: tuple[int, int] | None = None,
) -> RowStats:
    """Scan an (N, d) or (N, M, d) array in bounded chunks; rows are the last axis's vectors.
    Without ``norms`` only the NaN/Inf and all-zero rows are counted (faster); ``rows``
    limits the scan to leading rows [first, last).

    >>> s = row_stats(np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, 1.0]]))
    >>> s.non_finite_rows, s.first_non_finite_row, s.zero_norm_rows, s.norm_max
    (1, 2, 1, 5.0)
    """
    dim = int(values.shape[-1])
    per_leading = int(np.prod(values.shape[1:-1]))
    step = max(1, _SCAN_BYTES // max(1, per_leading * dim * values.dtype.itemsize))
    non_finite = zero = finite_rows = 0
    first_bad = first_zero = -1
    norm_min, norm_max, norm_sum, nonzero_min = np.inf, 0.0, 0.0, np.inf
    first, last = rows or (0, int(values.shape[0]))
    for start in range(first, last, step):
        block = np.asarray(values[start:min(start + step, last)]).reshape(-1, dim)
        finite = np.isfinite(block).all(axis=1)
        nonzero = (block != 0).any(axis=1)
        bad = np.flatnonzero(~finite)
        if bad.size:
            non_finite += bad.size
            first_bad = first_bad if first_bad >= 0 else start * per_leading + int(bad[0])
        zeros = np.flatnonzero(finite & ~nonzero)
        if zeros.size:
            zero += zeros.size
            first_zero = first_zero if first_zero >= 0 else start * per_leading + int(zeros[0])
        if norms:
            good = block[finite].astype(np.float64)
            lengths = np.sqrt(np.einsum("ij,ij->i", good, good))
            if lengths.size:
                norm_min = min(norm_min, float(lengths.min()))
                norm_max = max(norm_max, float(lengths.max()))
                norm_sum += float(lengths.sum())
                finite_rows += lengths.size
                if lengths.any():
                    nonzero_min = min(nonzero_min, float(lengths[lengths > 0].min()))
    nan = float("nan")
    return RowStats(
        rows=int(np.prod(values.shape[:-1])),
        non_finite_rows=non_finite,
        first_non_finite_row=first_bad,
        zero_norm_rows=zero,
        first_zero_norm_row=first_zero,
        norm_min=float(norm_min) if finite_rows else nan,
        norm_mean=norm_sum / finite_rows if finite_rows else nan,
        norm_max=float(norm_max) if finite_rows else nan,
        nonzero_norm_min=float(nonzero_min) if np.isfinite(nonzero_min) else nan,
    )


def check_values(
    embeddings: Embeddings, *, nonzero: bool, rows: tuple[int, int] | None = None,
    norms: bool = False,
) -> RowStats:
    """Refuse NaN/Inf anywhere and, when ``nonzero`` (cosine), zero-norm rows; ``rows``
    limits the check to leading rows [first, last) (one rank's share). The statistics of
    the scan, with the norms when asked for."""
    stats = row_stats(embeddings.values, norms=norms, rows=rows)
    if stats.non_finite_rows:
        bad = _rows(stats.non_finite_rows, "contains", "contain")
        raise InputError(f"{embeddings.label}: {bad} NaN or Inf (first: row "
                         f"{_row_name(embeddings, stats.first_non_finite_row)})")
    if nonzero and stats.zero_norm_rows:
        raise InputError(f"{embeddings.label}: {_rows(stats.zero_norm_rows, 'has', 'have')} zero "
                         f"norm, which cosine similarity cannot score (first: row "
                         f"{_row_name(embeddings, stats.first_zero_norm_row)}); use "
                         f"{arg('similarity')} dot or l2, or drop them")
    return stats


def _rows(count: int, one: str, many: str) -> str:
    """'1 row has', '3 rows have'."""
    return f"{count} row {one}" if count == 1 else f"{count} rows {many}"


def _row_name(embeddings: Embeddings, flat_row: int) -> str:
    if len(embeddings.shape) == 3:
        per = embeddings.shape[1]
        return f"{flat_row // per}, negative {flat_row % per}"
    return str(flat_row)

