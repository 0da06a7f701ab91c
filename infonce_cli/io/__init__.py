"""Files in and out: embeddings and ids from .npy, .npz, Parquet and Arrow IPC, retrieval
qrels, checks on them, and outputs written whole.

NumPy and pyarrow only: no torch, rich or typer; pyarrow is imported only where a
table is read. Every problem is an ``InputError``/``OutputError``/``UsageError``
whose one-line message starts with the file as the user gave it (control characters
escaped). Nothing here executes code from a data file: .npy headers are parsed and
checked before any data is read, and pickles are never loaded.

- :mod:`.sources`: what a path names (a file, ``-``, a pipe, a Parquet directory or a
  glob pattern) and what its first bytes say it holds;
- :mod:`.npy`, :mod:`.tables`: the readers of rows; :mod:`.loading`: what callers load;
- :mod:`.qrels`: retrieval judgements (BEIR TSV, TREC, JSONL, Parquet, Arrow) and lists
  of row ids, as text;
- :mod:`.checks`: shapes, dtypes, NaN/Inf and zero-norm rows;
- :mod:`.outputs`: outputs checked before a run and written atomically.

A read that waits on a pipe nobody writes to (or a write to a pipe nobody reads) calls
``on_wait`` with a message after ``wait_notice_seconds``, e.g. to print a note.
"""

from __future__ import annotations

from collections.abc import Callable

from .checks import (
    FLOAT_DTYPES,
    RowStats,
    check_float_array,
    check_pairs,
    check_values,
    row_stats,
)
from .loading import (
    Embeddings,
    describe_file,
    is_parquet,
    load_embeddings,
    load_id_array,
    load_ids,
    parquet_files,
)
from .npy import NpyRows
from .outputs import check_output_path, check_outputs, write_atomically
from .qrels import DEFAULT_ID_COLUMNS, Qrels, default_id_column, load_qrels, load_row_ids
from .sources import (
    PARQUET_SUFFIXES,
    Format,
    check_present,
    forget_streams,
    printable_path,
    quoted,
)
from .tables import TableRows

ParquetRows = TableRows
"""The reader of a vector column of a Parquet or Arrow table (its former name)."""

on_wait: Callable[[str], None] | None = None
"""Called (from a timer thread) with ``waiting for input on NAME`` when reading a pipe
has waited ``wait_notice_seconds`` for its first byte, and with ``waiting for a reader
of NAME`` when writing one has waited as long for a reader."""

wait_notice_seconds: float = 2.0

__all__ = [
    "DEFAULT_ID_COLUMNS",
    "FLOAT_DTYPES",
    "PARQUET_SUFFIXES",
    "Embeddings",
    "Format",
    "NpyRows",
    "ParquetRows",
    "Qrels",
    "RowStats",
    "TableRows",
    "check_float_array",
    "check_output_path",
    "check_outputs",
    "check_pairs",
    "check_present",
    "check_values",
    "default_id_column",
    "describe_file",
    "forget_streams",
    "is_parquet",
    "load_embeddings",
    "load_id_array",
    "load_ids",
    "load_qrels",
    "load_row_ids",
    "on_wait",
    "parquet_files",
    "printable_path",
    "quoted",
    "row_stats",
    "wait_notice_seconds",
    "write_atomically",
]
