"""Loading embeddings and ids from any input the path rules name, and describing files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infonce_cli.errors import InputError, UsageError

from .checks import FLOAT_DTYPES, check_float_array, row_stats
from .npy import NpyRows, npy_ids, npy_values, npz_array, npz_names
from .sources import (
    PARQUET_SUFFIXES,
    TABLE_FORMATS,
    Format,
    input_paths,
    input_sources,
    is_dataset,
    printable_path,
)
from .tables import (
    TableRows,
    column_array,
    describe_column,
    ids_to_numpy,
    list_leaf,
    table_parts,
)

_TABLE_SUFFIXES = (*PARQUET_SUFFIXES, ".arrow", ".feather", ".arrows", ".ipc")


@dataclass(frozen=True)
class Embeddings:
    """One input array and where it came from.

    ``values`` is row-sliceable: a reader of rows for regular .npy files and for
    Parquet and Arrow tables, an in-memory array otherwise. ``label`` names it in
    messages: the file, plus the column or key when one was chosen.
    """

    values: np.ndarray[Any, Any] | NpyRows | TableRows
    label: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.values.shape)


def load_embeddings(
    path: str, *, key: str | None = None, column: str | None = None, ndims: tuple[int, ...] = (2,)
) -> Embeddings:
    """Load a float array of one of the allowed ranks from .npy, .npz, Parquet or Arrow IPC
    (a file, standard input ``-``, a pipe, a directory of Parquet files or a pattern).

    ``key`` picks an array of an .npz, ``column`` a column of a table. The format is read
    from the first bytes, whatever the file's name.
    """
    sources = input_sources(path)
    kind = sources[0].format
    values: np.ndarray[Any, Any] | NpyRows | TableRows
    name = printable_path(path)
    if column is not None and kind not in TABLE_FORMATS:
        raise UsageError(f"{name}: a column was given, but this is {kind} data, not a Parquet "
                         "or Arrow table")
    if key is not None and kind is not Format.NPZ:
        raise UsageError(f"{name}: a key was given, but this is {kind} data, not an .npz "
                         "archive")
    if kind in TABLE_FORMATS:
        values = TableRows(path, column, depth=2 if 3 in ndims else 1, sources=sources)
        label = values.label
    elif kind is Format.NPZ:
        values, label = npz_array(sources[0], key)
    else:
        values, label = npy_values(sources[0]), name
    check_float_array(values, label, ndims)
    return Embeddings(values, label)


def load_ids(path: str, column: str) -> np.ndarray[Any, Any]:
    """A column of ids of a Parquet or Arrow table: strings or integers (N,), or lists of
    them of one length M (N, M), the natural layout for the ids of paired negatives."""
    parts = table_parts(path)
    array = column_array(parts, column, printable_path(path))
    return ids_to_numpy(array, printable_path(path), column)


def load_id_array(path: str) -> np.ndarray[Any, Any]:
    """Ids from an .npy input: integers or strings, never objects."""
    sources = input_sources(path)
    if len(sources) != 1 or sources[0].format is not Format.NPY:
        raise InputError(f"{printable_path(path)}: ids must be an .npy array (or a column "
                         "of a Parquet file)")
    return npy_ids(sources[0])


def parquet_files(path: str) -> list[str]:
    """The files a path names: the file itself, a directory's Parquet part files, or a
    pattern's matches, in sorted order. A path that exists is never a pattern."""
    return input_paths(path)


def is_parquet(path: str) -> bool:
    """Whether a path names a table (Parquet or Arrow IPC), whose columns are chosen by
    name: a directory, a pattern, or a file or stream whose first bytes say so. A path
    that cannot be read is judged by its suffix."""
    try:
        return input_sources(path)[0].format in TABLE_FORMATS
    except InputError:
        return Path(path).suffix.lower() in _TABLE_SUFFIXES


# ---------------------------------------------------------------- inspect


def describe_file(path: str) -> dict[str, Any]:
    """Format, shape, dtype, table schema and per-array row statistics of one input.

    Every array of an .npz and every list column of a table is an entry of ``arrays``;
    float arrays and vector columns carry norms and NaN/Inf and zero-norm counts, other
    arrays and columns (ids, labels) only their name, shape and dtype. An unreadable
    input raises ``InputError``.
    """
    sources = input_sources(path)
    kind = sources[0].format
    info: dict[str, Any] = {"file": path, "format": str(kind)}
    arrays: dict[str, np.ndarray[Any, Any] | NpyRows | TableRows] = {}
    described: list[dict[str, Any]] = []
    if kind in TABLE_FORMATS:
        parts = table_parts(path, sources)
        info["rows"] = sum(sum(part.chunk_rows) for part in parts)
        info["row_groups"] = sum(len(part.chunk_rows) for part in parts)
        if len(parts) > 1 or is_dataset(path):
            info["files"] = len(parts)
        schema = parts[0].schema
        info["columns"] = {field.name: str(field.type) for field in schema}
        for field in schema:
            depth, leaf = list_leaf(field.type)
            if depth == 0:
                continue
            if depth <= 2 and _is_float(leaf):
                arrays[field.name] = TableRows(path, field.name, depth=2, sources=sources)
            else:
                described.append(describe_column(parts, field))
        for part in parts:
            part.close()
    elif kind is Format.NPZ:
        for name in npz_names(sources[0]):
            arrays[name], _ = npz_array(sources[0], name)
    else:
        arrays[""] = npy_values(sources[0], floats_only=False)
    entries = []
    for name, values in arrays.items():
        entry: dict[str, Any] = {"name": name or None, "shape": list(values.shape),
                                 "dtype": values.dtype.name}
        if values.dtype.type in FLOAT_DTYPES and values.ndim >= 1 and values.size:
            stats = row_stats(values.reshape(1, -1) if isinstance(values, np.ndarray)
                              and values.ndim == 1 else values)
            entry.update(
                norm_min=stats.norm_min, norm_mean=stats.norm_mean, norm_max=stats.norm_max,
                non_finite_rows=stats.non_finite_rows, zero_norm_rows=stats.zero_norm_rows,
            )
        entries.append(entry)
    order = {field: index for index, field in enumerate(info.get("columns", {}))}
    info["arrays"] = sorted(entries + described, key=lambda e: order.get(e["name"], 0))
    return info


def _is_float(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_floating(kind))
