"""Reading blocks of input rows onto the device, ready for scoring.

Inputs are row-sliceable (NumPy arrays, tensors, or the file readers of io.py);
only the rows of the current block are read, converted to the compute dtype and,
for rows compared through a matrix product, prepared (normalised for cosine) and
fingerprinted, so that copies of a query's positive can be found exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import numpy as np
import torch

from .errors import UsageError
from .similarity import Similarity, prepare_rows, rows_for_dtype


class RowSource(Protocol):
    """Anything row-sliceable with a shape: an array, a tensor, a file reader."""

    @property
    def shape(self) -> Any: ...

    @property
    def ndim(self) -> int: ...

    def __getitem__(self, rows: slice) -> Any: ...


Rows: TypeAlias = "np.ndarray[Any, Any] | torch.Tensor | RowSource"


@dataclass
class RowBlock:
    """A block of input rows: as given (in the compute dtype), prepared for scoring, and an
    exact fingerprint of each row's bits, for finding copies of the positive."""

    raw: torch.Tensor
    prepared: torch.Tensor
    fingerprint: torch.Tensor | None  # int64 per row; None where copies tie by construction

    def __getitem__(self, rows: slice) -> RowBlock:
        fingerprint = None if self.fingerprint is None else self.fingerprint[rows]
        return RowBlock(self.raw[rows], self.prepared[rows], fingerprint)

    def flattened(self, dim: int) -> RowBlock:
        """(B, M, d) rows as (B·M, d)."""
        fingerprint = None if self.fingerprint is None else self.fingerprint.reshape(-1)
        return RowBlock(self.raw.reshape(-1, dim), self.prepared.reshape(-1, dim), fingerprint)


@dataclass(frozen=True)
class RowReader:
    """Reads rows [start, stop) of an input as tensors on ``device`` in ``dtype``."""

    similarity: Similarity
    dtype: torch.dtype
    device: torch.device

    def raw(self, source: Rows, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a tensor on the device, in the compute dtype."""
        block = source[start:stop]
        if isinstance(block, np.ndarray):
            if not (block.flags.writeable and block.flags.c_contiguous
                    and block.dtype.isnative):
                # Read-only maps, big-endian or Fortran-ordered arrays: a private copy.
                block = np.array(block, dtype=block.dtype.newbyteorder("="), order="C")
            block = torch.from_numpy(block)
            block = rows_for_dtype(block, self.dtype, self.similarity)
            if self.device.type == "cuda":
                block = block.pin_memory()  # so the copy below runs asynchronously
        else:
            block = rows_for_dtype(block, self.dtype, self.similarity)
        return block.to(device=self.device, dtype=self.dtype, non_blocking=True)

    def block(self, source: Rows, start: int, stop: int, *, matrix: bool = True) -> RowBlock:
        """Rows [start, stop) in the compute dtype. ``matrix`` rows are compared through a
        matrix product, so they are prepared and fingerprinted; paired rows are scored
        row by row from the raw values (see ``similarity.paired``)."""
        raw = self.raw(source, start, stop)
        if not matrix:
            return RowBlock(raw, raw, None)
        return RowBlock(raw, prepare_rows(raw, self.similarity), fingerprint(raw))


_FINGERPRINT_ROWS = 1024


def fingerprint(rows: torch.Tensor) -> torch.Tensor:
    """An integer hash of each row's bits: equal rows always get equal fingerprints.

    The bits are read as 16-bit integers (|v| ≤ 2^15) and weighted (< 2^16) in a float64
    matrix product: every partial sum is an integer below 2^53, so exact in any order of
    summation, for rows of up to 2^22 such integers.

    >>> rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    >>> hashes = fingerprint(rows)
    >>> bool(hashes[0] == hashes[2]), bool(hashes[0] == hashes[1])
    (True, False)
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


class Positives:
    """The positives, by blocks. In-batch candidates are read once per query block, so when
    ``keep`` (they fit the budget) they are converted once, as given and prepared."""

    def __init__(self, source: Rows, reader: RowReader, keep: bool) -> None:
        self.source, self.reader, self.keep = source, reader, keep
        self.n = int(source.shape[0])
        self._whole: RowBlock | None = None
        self._repeat: bool | None = None

    def block(self, start: int, stop: int) -> RowBlock:
        """Positives [start, stop)."""
        if self._whole is None and self.keep:
            self._whole = self.reader.block(self.source, 0, self.n)
        if self._whole is None:
            return self.reader.block(self.source, start, stop)
        return self._whole[start:stop]

    def repeat(self) -> bool:
        """Whether two positives may be bit-identical (unknown when they are not kept)."""
        if self._repeat is None:
            whole = self._whole
            if whole is None or whole.fingerprint is None:
                self._repeat = True
            else:
                self._repeat = bool(torch.unique(whole.fingerprint).numel() < self.n)
        return self._repeat


def gather_rows(source: Rows, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Rows ``rows`` (any order, repeats allowed) of an array or a file reader, read as
    contiguous runs of the distinct rows they touch."""
    wanted = np.unique(rows)
    if wanted.size == 0:
        return np.empty((0, int(source.shape[-1])), dtype=np.float32)
    breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
    parts = [np.asarray(source[int(run[0]):int(run[-1]) + 1])
             for run in np.split(wanted, breaks)]
    block = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(block[np.searchsorted(wanted, rows)])
