"""Parquet and Arrow IPC inputs: vector columns read a chunk (row group or record batch)
at a time, id columns read whole.

A vector column is a ``fixed_size_list`` or ``list`` of floats (N, d), or a list
of such lists (N, M, d) for paired negatives. pyarrow is imported inside the
functions that read: loading it takes a tenth of a second that .npy runs never pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from infonce_cli.errors import InputError

from .npy import RowReader
from .sources import Format, Source, first_line, input_sources, printable, printable_path, quoted

if TYPE_CHECKING:  # pyarrow is imported where a table is read: it takes 0.1 s to load
    import pyarrow as pa


class TablePart:
    """One Parquet or Arrow IPC file (or stream) of a table: its schema, the rows of each
    chunk, and the chunks read one at a time. A regular file is opened while its chunks
    are read and closed by :meth:`close`; a stream's bytes are already in memory."""

    def __init__(self, source: Source) -> None:
        self.source, self.name = source, source.name
        self._file: Any = None  # the open file under ``_handle``
        self._handle: Any = None
        self._batches: list[Any] | None = None
        try:
            self.schema, self.chunk_rows = self._layout()
            self.columns = {field.name: str(field.type) for field in self.schema}
        except InputError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, …
            noun = "Parquet file" if source.format is Format.PARQUET else str(source.format)
            raise InputError(f"{self.name}: not a readable {noun} ({first_line(exc)})") from None
        finally:
            self.close()  # a dataset of many parts keeps one file open at a time

    def _input(self, mapped: bool = False) -> Any:
        import pyarrow as pa

        if self.source.data is not None:
            return pa.BufferReader(pa.py_buffer(self.source.data))
        return pa.memory_map(self.source.path) if mapped else pa.OSFile(self.source.path)

    def _open(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._handle is None:
            self._file = self._input()
            if self.source.format is Format.PARQUET:
                self._handle = pq.ParquetFile(self._file)
            else:
                self._handle = pa.ipc.open_file(self._file)
        return self._handle

    def _layout(self) -> tuple[pa.Schema, list[int]]:
        import pyarrow as pa

        if self.source.format is Format.PARQUET:
            handle = self._open()
            metadata = handle.metadata
            rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
            return handle.schema_arrow, rows
        if self.source.format is Format.ARROW_STREAM:
            with self._input() as stream:
                table = pa.ipc.open_stream(stream).read_all()
            self._batches = table.to_batches()
            return table.schema, [batch.num_rows for batch in self._batches]
        # Counting an Arrow file's rows reads each batch's header; through a memory map
        # that touches no data. The data is read later without one.
        with self._input(mapped=True) as mapped:
            reader = pa.ipc.open_file(mapped)
            rows = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
            return reader.schema, rows

    @property
    def chunk_kind(self) -> str:
        return "row group" if self.source.format is Format.PARQUET else "record batch"

    def read(self, index: int, column: str) -> pa.Array:
        """One chunk of one column, as a single Arrow array."""
        try:
            if self._batches is not None:
                array = self._batches[index].column(column)
            elif self.source.format is Format.PARQUET:
                table = self._open().read_row_group(index, columns=[column])
                array = table.column(column).combine_chunks()
            else:
                array = self._open().get_batch(index).column(column)
            # A damaged file can hold offsets that point anywhere; pyarrow aborts the
            # process on some of them, so every array is checked before it is used.
            array.validate(full=True)
            return array
        except Exception as exc:
            raise InputError(f"{self.name}: cannot read {self.chunk_kind} {index} of column "
                             f"{quoted(column)} ({first_line(exc)})") from None

    def close(self) -> None:
        """Close the file (a later read opens it again)."""
        if self._file is not None:
            self._file.close()
        self._file = self._handle = None


def table_parts(path: str, sources: list[Source] | None = None) -> list[TablePart]:
    """The parts of a Parquet or Arrow table: one file or stream, a directory's files or
    a pattern's matches."""
    sources = sources if sources is not None else input_sources(path)
    for source in sources:
        if source.format not in (Format.PARQUET, Format.ARROW_FILE, Format.ARROW_STREAM):
            raise InputError(f"{source.name}: holds {source.format} data, not a Parquet or "
                             "Arrow table")
    return [TablePart(source) for source in sources]


def is_list(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind)
                or pa.types.is_fixed_size_list(kind))


def list_leaf(kind: pa.DataType) -> tuple[int, pa.DataType]:
    """How deep lists nest in a column type, and the type of their values."""
    depth = 0
    while is_list(kind):
        kind, depth = kind.value_type, depth + 1
    return depth, kind


def _is_vector_column(kind: pa.DataType) -> bool:
    import pyarrow as pa

    depth, leaf = list_leaf(kind)
    return depth >= 1 and bool(pa.types.is_floating(leaf))


def _columns_listed(schema: pa.Schema) -> str:
    return ", ".join(f"{printable(field.name)} ({field.type})" for field in schema) or "none"


class TableRows(RowReader):
    """Rows of one vector column across the parts of a Parquet or Arrow table, read a
    chunk (row group or record batch) at a time.

    Slicing with ``[start:stop]`` decodes only the chunks that overlap the range; the
    last one decoded is kept, since blocks are read in order. Every chunk is checked (no
    nulls, no ragged lists, the same shape and dtype) as it is read. ``column=None``
    picks the only float-list column.
    """

    def __init__(self, path: str, column: str | None, depth: int,
                 sources: list[Source] | None = None) -> None:
        self.parts = table_parts(path, sources)
        self.files = [part.source.path for part in self.parts]
        name = printable_path(path)
        schema = self.parts[0].schema
        if column is None:
            column = _only_vector_column(schema, name)
        elif column not in schema.names:
            raise InputError(f"{name}: no column {quoted(column)}; columns: "
                             f"{_columns_listed(schema)}")
        self.column, self.label, self.depth = column, f"{name}:{printable(column)}", depth
        self.groups: list[tuple[int, int, int, int]] = []  # part, chunk, first row, rows
        total = 0
        for number, part in enumerate(self.parts):
            if column not in part.schema.names:
                raise InputError(f"{part.name}: no column {quoted(column)}")
            for index, rows in enumerate(part.chunk_rows):
                if rows:
                    self.groups.append((number, index, total, rows))
                    total += rows
        if not self.groups:
            raise InputError(f"{self.label}: no rows")
        self._cache: tuple[int, np.ndarray[Any, Any]] | None = None
        self._open_part: int | None = None
        first = self._group(0)
        self.shape: tuple[int, ...] = (total, *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def _group(self, position: int) -> np.ndarray[Any, Any]:
        if self._cache is not None and self._cache[0] == position:
            return self._cache[1]
        number, index, first_row, _ = self.groups[position]
        if self._open_part not in (None, number):
            self.parts[self._open_part].close()  # one open file at a time, however many
        self._open_part = number
        array = self.parts[number].read(index, self.column)
        values = nested_lists_to_numpy(array, self.label, self.depth, first_row)
        if hasattr(self, "shape"):
            if values.shape[1:] != self.shape[1:]:
                raise InputError(f"{self.label}: rows from {first_row} have shape "
                                 f"{values.shape[1:]}, earlier rows {self.shape[1:]}")
            if values.dtype != self.dtype:
                raise InputError(f"{self.label}: rows from {first_row} are "
                                 f"{values.dtype.name}, earlier rows {self.dtype.name}")
        self._cache = (position, values)
        return values

    def __getitem__(self, rows: slice) -> np.ndarray[Any, Any]:
        start, stop, _ = rows.indices(self.shape[0])
        parts = []
        for position, (_, _, first, count) in enumerate(self.groups):
            if first + count <= start or first >= stop:
                continue
            values = self._group(position)
            parts.append(values[max(start - first, 0):min(stop - first, count)])
        if not parts:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def _only_vector_column(schema: pa.Schema, name: str) -> str:
    vectors: list[str] = [field.name for field in schema if _is_vector_column(field.type)]
    lists: list[str] = [field.name for field in schema if is_list(field.type)]
    if len(vectors) == 1:
        return vectors[0]
    if not vectors and len(lists) == 1:
        return lists[0]  # not floats: reading it says so
    if not lists:
        raise InputError(f"{name}: 0 list columns, so no column of vectors; columns: "
                         f"{_columns_listed(schema)}")
    found = ", ".join(printable(column) for column in vectors or lists)
    raise InputError(f"{name}: {len(vectors or lists)} list columns ({found}); choose one "
                     "with the matching --*-col option")


def nested_lists_to_numpy(
    array: pa.Array, label: str, depth: int, first_row: int = 0
) -> np.ndarray[Any, Any]:
    """Turn a column of (lists of) equal-length float lists into an (N, [M,] d) array.

    A column nested one level less than ``depth`` allows is read as (N, d).
    ``first_row`` numbers the rows in messages.
    """
    import pyarrow as pa

    shape = [len(array)]
    level: pa.Array = array
    for _ in range(depth):
        if not is_list(level.type):
            break
        if level.null_count:
            raise InputError(f"{label}: {level.null_count} null rows or lists; "
                             "every row needs a vector")
        shape.append(_regular_length(level, label, first_row, "values"))
        level = level.flatten()
    if len(shape) == 1:
        raise InputError(f"{label}: expected a list<float> column of vectors, got "
                         f"{printable(str(array.type))}")
    if is_list(level.type):
        wanted = "list<float> (N, d)" if depth == 1 else "list<float> or list<list<float>>"
        raise InputError(f"{label}: lists nested too deep: expected {wanted}, got "
                         f"{printable(str(array.type))}")
    if not pa.types.is_floating(level.type):
        raise InputError(f"{label}: expected float vectors (float16/32/64), got lists of "
                         f"{level.type}")
    if level.null_count:
        raise InputError(f"{label}: {level.null_count} null values inside the vectors")
    flat = level.to_numpy(zero_copy_only=False)
    return np.asarray(flat).reshape(shape)


def _regular_length(level: pa.Array, label: str, first_row: int, what: str) -> int:
    """The one length of every list in a list array; ragged lists are refused."""
    lengths = np.asarray(level.value_lengths().to_numpy(zero_copy_only=False))
    if len(lengths) and lengths.min() != lengths.max():
        first = int(np.argmax(lengths != lengths[0]))
        raise InputError(f"{label}: ragged lists: row {first_row + first} has "
                         f"{lengths[first]} {what}, row {first_row} has {lengths[0]}")
    return int(lengths[0]) if len(lengths) else 0


# ---------------------------------------------------------------- ids and descriptions


def column_array(parts: list[TablePart], column: str, name: str) -> pa.Array:
    """A whole column across the parts of a table, as one Arrow array."""
    import pyarrow as pa

    chunks = []
    for part in parts:
        if column not in part.schema.names:
            raise InputError(f"{part.name}: no column {quoted(column)}; columns: "
                             f"{_columns_listed(part.schema)}")
        chunks += [part.read(index, column) for index in range(len(part.chunk_rows))]
        part.close()
    if not chunks:
        return pa.array([], type=parts[0].schema.field(column).type)
    try:
        return pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
    except Exception as exc:  # parts whose column types differ
        raise InputError(f"{name}: column {quoted(column)} differs between parts "
                         f"({first_line(exc)})") from None


def ids_to_numpy(array: pa.Array, name: str, column: str) -> np.ndarray[Any, Any]:
    """Ids as NumPy: a column of strings or integers (N,), or of equal-length lists of
    them (N, M) (the ids of paired negatives)."""
    import pyarrow as pa

    where = f"{name}: column {quoted(column)}"
    if array.null_count:
        raise InputError(f"{where} has {array.null_count} null ids")
    shape = [len(array)]
    level = array
    while is_list(level.type):
        shape.append(_regular_length(level, f"{where} (ids of paired negatives need the same "
                                            "number in every row)", 0, "ids"))
        level = level.flatten()
        if level.null_count:
            raise InputError(f"{where} has {level.null_count} null ids inside its lists")
    if pa.types.is_dictionary(level.type):
        level = level.dictionary_decode()
    if not (pa.types.is_string(level.type) or pa.types.is_large_string(level.type)
            or pa.types.is_integer(level.type)):
        raise InputError(f"{where} must hold strings or integers (or lists of them), got "
                         f"{printable(str(array.type))}")
    return np.asarray(level.to_numpy(zero_copy_only=False)).reshape(shape)


def describe_column(parts: list[TablePart], field: pa.Field) -> dict[str, Any]:
    """Name, shape and value type of a column that is not a column of vectors (ids,
    labels), read a chunk at a time; a level whose lists differ in length is None."""
    depth, leaf = list_leaf(field.type)
    lengths: list[set[int]] = [set() for _ in range(depth)]
    for part in parts:
        for index in range(len(part.chunk_rows)):
            level = part.read(index, field.name)
            for found in lengths:
                found.update(int(n) for n in np.unique(np.asarray(
                    level.value_lengths().drop_null().to_numpy(zero_copy_only=False))))
                level = level.flatten()
        part.close()
    shape: list[int | None] = [sum(sum(part.chunk_rows) for part in parts)]
    for found in lengths:
        shape.append(found.pop() if len(found) == 1 else 0 if not found else None)
        if shape[-1] is None:
            break
    return {"name": field.name, "shape": shape, "dtype": str(leaf)}
