"""Reading embeddings from .npy, .npz and Parquet, checking them, and writing outputs.

NumPy and pyarrow only: no torch, rich or typer. Every problem is an
``InputError``/``OutputError`` whose message starts with the file's name as
the user gave it. Nothing here executes code from a data file: ``.npy`` headers
are parsed and checked before anything is mapped, and pickles are never loaded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, OutputError, UsageError

if TYPE_CHECKING:  # pyarrow is imported where Parquet is read: it takes 0.1 s to load
    import pyarrow as pa
    import pyarrow.parquet as pq

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
PARQUET_SUFFIXES = (".parquet", ".pq")
_SCAN_BYTES = 16 * 2**20
"""How much of an array the value checks read at a time."""


@dataclass(frozen=True)
class Embeddings:
    """One input array and where it came from.

    ``values`` is row-sliceable: a reader of rows for ``.npy`` files, an
    in-memory array otherwise. ``label`` names it in messages: the file, plus
    the column or key when one was chosen.
    """

    values: np.ndarray[Any, Any] | NpyRows | ParquetRows
    label: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.values.shape)


# ---------------------------------------------------------------- loading


def load_embeddings(
    path: str, *, key: str | None = None, column: str | None = None, ndims: tuple[int, ...] = (2,)
) -> Embeddings:
    """Load a float array of one of the allowed ranks from .npy, .npz or Parquet.

    ``key`` picks an array of an .npz, ``column`` a column of a Parquet file.
    """
    values: np.ndarray[Any, Any] | NpyRows | ParquetRows
    if is_parquet(path):
        if not any(c in path for c in "*?[") and not Path(path).exists():
            raise InputError(f"{path}: no such file")
        values, label = _parquet_embeddings(path, column, ndims)
        suffix = ".parquet"
    elif (suffix := _existing_file(path).suffix.lower()) == ".npz":
        values, label = _npz_array(path, key)
    elif suffix == ".npy":
        values, label = _npy_array(path), path
    else:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                         "expected .npy, .npz or .parquet")
    if column is not None and suffix not in PARQUET_SUFFIXES:
        raise UsageError(f"{path}: a column was given, but this is not a Parquet file")
    if key is not None and suffix != ".npz":
        raise UsageError(f"{path}: a key was given, but this is not an .npz file")
    check_float_array(values, label, ndims)
    return Embeddings(values, label)


def load_ids(path: str, column: str) -> np.ndarray[Any, Any]:
    """Read a Parquet column of ids (strings or integers) as a NumPy array."""
    import pyarrow as pa

    parts = []
    for file in parquet_files(path):
        names = _parquet_file(file).schema_arrow.names
        if column not in names:
            raise InputError(f"{file}: no column {column!r}; columns: {', '.join(names)}")
        parts.append(_read_column(file, column))
    array = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
    if array.null_count:
        raise InputError(f"{path}: column {column!r} has {array.null_count} null ids")
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
            or pa.types.is_integer(array.type)):
        raise InputError(f"{path}: column {column!r} must hold strings or integers, "
                         f"got {array.type}")
    return np.asarray(array.to_numpy(zero_copy_only=False))


def load_id_array(path: str) -> np.ndarray[Any, Any]:
    """Ids from an .npy file: integers or strings, never objects."""
    _existing_file(path)
    if not path.lower().endswith(".npy"):
        raise InputError(f"{path}: ids must be an .npy array (or a Parquet column)")
    values = np.asarray(_npy_ids(path))
    if values.dtype.kind not in "iuUS":
        raise InputError(f"{path}: ids must be integers or strings, got {values.dtype.name}")
    return values


def _npy_ids(path: str) -> np.ndarray[Any, Any]:
    try:
        values: np.ndarray[Any, Any] = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path}: holds Python objects (pickled data), which are never "
                             "loaded; save the ids as integers or strings") from None
        raise InputError(f"{path}: not a valid .npy file ({_first_line(exc)})") from None
    except Exception as exc:
        raise InputError(f"{path}: not a valid .npy file ({_first_line(exc)})") from None
    return values


def _read_column(path: str, column: str) -> pa.Array:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=[column]).column(column).combine_chunks()
    except Exception as exc:
        raise InputError(f"{path}: cannot read column {column!r} ({_first_line(exc)})") from None


def _existing_file(path: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise InputError(f"{path}: no such file")
    if file.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if not os.access(file, os.R_OK):
        raise InputError(f"{path}: permission denied")
    return file


class _RowReader:
    """What the file readers share: a length, and conversion of all rows to an array."""

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray[Any, Any]:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        """All rows, read at once (for small inputs and tests)."""
        rows = self[0:self.shape[0]]
        return rows if dtype is None else rows.astype(dtype)


class NpyRows(_RowReader):
    """Rows of an .npy file, read on demand with ``os.pread`` into fresh arrays.

    Slicing with ``[start:stop]`` reads just those rows. Nothing is memory-mapped, so
    the process's resident memory holds only the blocks in use, however large the
    file (a mapped file counts every page it has touched).
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                 offset: int) -> None:
        self.path, self.shape, self.dtype, self.offset = path, shape, dtype, offset
        self.ndim = len(shape)
        self.size = int(np.prod(shape))
        self._row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def __getitem__(self, rows: slice) -> np.ndarray[Any, Any]:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("NpyRows reads contiguous row ranges only")
        count = max(0, stop - start)
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8).data)
        with open(self.path, "rb", buffering=0) as handle:
            done, total = 0, count * self._row_bytes
            position = self.offset + start * self._row_bytes
            while done < total:
                read = os.preadv(handle.fileno(), [view[done:]], position + done)
                if read == 0:
                    raise InputError(f"{self.path}: ended early while reading rows "
                                     f"{start}..{stop}")
                done += read
        return out


def _npy_array(path: str) -> np.ndarray[Any, Any] | NpyRows:
    """Open an .npy file for reading rows, after checking its header against its size."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except (ValueError, OSError, SyntaxError, TypeError) as exc:
            raise InputError(f"{path}: not a valid .npy file ({_first_line(exc)})") from None
        offset = handle.tell()
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects (pickled data), which are never loaded; "
                         "save a float array instead")
    _check_dtype(dtype, path)
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    actual = os.path.getsize(path) - offset
    if actual < expected:
        raise InputError(f"{path}: truncated: the header promises shape {tuple(shape)} "
                         f"({expected} bytes of data) but the file holds {actual}")
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    if fortran or len(shape) < 2:
        # Rows of a Fortran-ordered array are not contiguous on disk; such files (and
        # 1-D ones) are small in practice and are read whole.
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                           order="F" if fortran else "C")
        return np.array(mapped, order="C")
    return NpyRows(path, tuple(int(x) for x in shape), dtype, offset)


@contextlib.contextmanager
def _npz_archive(path: str) -> Iterator[Any]:
    """An open .npz archive; the file is closed whatever happens (np.load on a path
    leaks its handle when the zip is corrupt)."""
    with open(path, "rb") as handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except Exception as exc:  # zipfile and numpy raise many kinds here
            raise InputError(f"{path}: not a valid .npz file ({_first_line(exc)})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: not a valid .npz file (it is a plain .npy)")
        with archive:
            yield archive


def _npz_names(path: str) -> list[str]:
    with _npz_archive(path) as archive:
        return list(archive.files)


def _npz_array(path: str, key: str | None) -> tuple[np.ndarray[Any, Any], str]:
    with _npz_archive(path) as archive:
        names = list(archive.files)
        if key is None:
            if len(names) != 1:
                listed = ", ".join(names) if names else "none"
                raise InputError(f"{path}: holds {len(names)} arrays ({listed}); "
                                 "choose one with the matching --*-key option")
            key = names[0]
        elif key not in names:
            raise InputError(f"{path}: no array {key!r}; arrays: {', '.join(names) or 'none'}")
        try:
            value = archive[key]
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise InputError(f"{path}[{key}]: holds Python objects (pickled data), "
                                 "which are never loaded; save a float array instead") from None
            raise InputError(f"{path}[{key}]: unreadable ({_first_line(exc)})") from None
        except Exception as exc:
            raise InputError(f"{path}[{key}]: unreadable ({_first_line(exc)})") from None
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path}[{key}]: not a NumPy array")
    return value, f"{path}[{key}]"


def _parquet_file(path: str) -> pq.ParquetFile:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, …
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None


def parquet_files(path: str) -> list[str]:
    """The Parquet files a path names: the file itself, a directory's *.parquet part files,
    or a glob pattern's matches, in sorted order."""
    if any(char in path for char in "*?["):
        files = sorted(glob.glob(path))
    elif Path(path).is_dir():
        files = sorted(str(f) for f in Path(path).iterdir() if f.suffix.lower()
                       in PARQUET_SUFFIXES and not f.name.startswith((".", "_")))
    else:
        return [path]
    if not files:
        raise InputError(f"{path}: no Parquet files found")
    return files


def is_parquet(path: str) -> bool:
    """Whether a path names Parquet input: a .parquet file, a directory or a glob."""
    return (Path(path).suffix.lower() in PARQUET_SUFFIXES or any(c in path for c in "*?[")
            or Path(path).is_dir())


def _list_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if _is_list(f.type)]


def _is_list(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind)
                or pa.types.is_fixed_size_list(kind))


class ParquetRows(_RowReader):
    """Rows of one vector column across Parquet files, read a row group at a time.

    Slicing with ``[start:stop]`` decodes only the row groups that overlap the
    range; the last one decoded is kept, since blocks are read in order. Every
    row group is checked (no nulls, no ragged lists, the same shape) as it is read.
    """

    def __init__(self, path: str, column: str | None, depth: int) -> None:
        self.files = parquet_files(path)
        schema = _parquet_file(self.files[0]).schema_arrow
        if column is None:
            candidates = _list_columns(schema)
            if len(candidates) != 1:
                found = ", ".join(candidates) if candidates else "none"
                raise InputError(f"{path}: {len(candidates)} list columns ({found}); "
                                 "choose one with the matching --*-col option")
            column = candidates[0]
        elif column not in schema.names:
            raise InputError(f"{path}: no column {column!r}; columns: {', '.join(schema.names)}")
        self.column, self.label, self.depth = column, f"{path}:{column}", depth
        self.groups: list[tuple[str, int, int, int]] = []  # file, row group, first row, rows
        total = 0
        for file in self.files:
            metadata = _parquet_file(file).metadata
            if column not in _parquet_file(file).schema_arrow.names:
                raise InputError(f"{file}: no column {column!r}")
            for index in range(metadata.num_row_groups):
                rows = metadata.row_group(index).num_rows
                if rows:
                    self.groups.append((file, index, total, rows))
                    total += rows
        if not self.groups:
            raise InputError(f"{self.label}: no rows")
        self._cache: tuple[int, np.ndarray[Any, Any]] | None = None
        first = self._group(0)
        self.shape: tuple[int, ...] = (total, *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def _group(self, position: int) -> np.ndarray[Any, Any]:
        if self._cache is not None and self._cache[0] == position:
            return self._cache[1]
        file, index, first_row, _ = self.groups[position]
        try:
            table = _parquet_file(file).read_row_group(index, columns=[self.column])
        except Exception as exc:
            raise InputError(f"{self.label}: cannot read row group {index} of {file} "
                             f"({_first_line(exc)})") from None
        values = _nested_lists_to_numpy(table.column(self.column).combine_chunks(),
                                        self.label, self.depth, first_row)
        if hasattr(self, "shape") and values.shape[1:] != self.shape[1:]:
            raise InputError(f"{self.label}: rows from {first_row} have shape "
                             f"{values.shape[1:]}, earlier rows {self.shape[1:]}")
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


def _parquet_embeddings(
    path: str, column: str | None, ndims: tuple[int, ...]
) -> tuple[ParquetRows, str]:
    rows = ParquetRows(path, column, depth=2 if 3 in ndims else 1)
    return rows, rows.label


def _nested_lists_to_numpy(
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
        if not _is_list(level.type):
            break
        if level.null_count:
            raise InputError(f"{label}: {level.null_count} null rows or lists; "
                             "every row needs a vector")
        lengths = np.asarray(level.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) and lengths.min() != lengths.max():
            first = int(np.argmax(lengths != lengths[0]))
            raise InputError(f"{label}: ragged lists: row {first_row + first} has "
                             f"{lengths[first]} values, row {first_row} has {lengths[0]}")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        level = level.flatten()
    if len(shape) == 1:
        raise InputError(f"{label}: expected a list<float> column of vectors, got {array.type}")
    if _is_list(level.type):
        wanted = "list<float> (N, d)" if depth == 1 else "list<float> or list<list<float>>"
        raise InputError(f"{label}: lists nested too deep: expected {wanted}, got {array.type}")
    if not pa.types.is_floating(level.type):
        raise InputError(f"{label}: expected float vectors (float16/32/64), got lists of "
                         f"{level.type}")
    if level.null_count:
        raise InputError(f"{label}: {level.null_count} null values inside the vectors")
    flat = level.to_numpy(zero_copy_only=False)
    return np.asarray(flat).reshape(shape)


def _check_dtype(dtype: np.dtype[Any], label: str) -> None:
    if dtype.type not in FLOAT_DTYPES:
        raise InputError(f"{label}: expected a float array (float16/32/64), got {dtype.name}")


def check_float_array(
    values: np.ndarray[Any, Any] | NpyRows | ParquetRows, label: str, ndims: tuple[int, ...]
) -> None:
    _check_dtype(values.dtype, label)
    if values.ndim not in ndims:
        wanted = " or ".join({2: "a 2-D float array (N, d)", 3: "a 3-D float array (N, M, d)"}[n]
                             for n in ndims)
        raise InputError(f"{label}: expected {wanted}, got shape {tuple(values.shape)}")
    if values.shape[0] == 0 or values.shape[-1] == 0 or 0 in values.shape:
        raise InputError(f"{label}: empty array of shape {tuple(values.shape)}")


# ---------------------------------------------------------------- checks


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


def row_stats(
    values: np.ndarray[Any, Any] | NpyRows | ParquetRows, norms: bool = True,
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
    norm_min, norm_max, norm_sum = np.inf, 0.0, 0.0
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
    )


def check_values(
    embeddings: Embeddings, *, nonzero: bool, rows: tuple[int, int] | None = None
) -> None:
    """Refuse NaN/Inf anywhere and, when ``nonzero`` (cosine), zero-norm rows; ``rows``
    limits the check to leading rows [first, last) (one rank's share)."""
    stats = row_stats(embeddings.values, norms=False, rows=rows)
    if stats.non_finite_rows:
        raise InputError(f"{embeddings.label}: {stats.non_finite_rows} rows contain NaN or Inf "
                         f"(first: row {_row_name(embeddings, stats.first_non_finite_row)})")
    if nonzero and stats.zero_norm_rows:
        raise InputError(f"{embeddings.label}: {stats.zero_norm_rows} rows have zero norm, "
                         f"which cosine similarity cannot score (first: row "
                         f"{_row_name(embeddings, stats.first_zero_norm_row)}); "
                         "use --similarity dot or l2, or drop them")


def _row_name(embeddings: Embeddings, flat_row: int) -> str:
    if len(embeddings.shape) == 3:
        per = embeddings.shape[1]
        return f"{flat_row // per}, negative {flat_row % per}"
    return str(flat_row)


# ---------------------------------------------------------------- inspect


def describe_file(path: str) -> dict[str, Any]:
    """Shape, dtype, Parquet schema and per-array row statistics of one file."""
    arrays: dict[str, np.ndarray[Any, Any] | NpyRows | ParquetRows] = {}
    info: dict[str, Any] = {"file": path}
    if is_parquet(path):
        files = parquet_files(path)
        metadata = [_parquet_file(file).metadata for file in files]
        info["rows"] = sum(m.num_rows for m in metadata)
        info["row_groups"] = sum(m.num_row_groups for m in metadata)
        if len(files) > 1:
            info["files"] = len(files)
        schema = _parquet_file(files[0]).schema_arrow
        info["columns"] = {f.name: str(f.type) for f in schema}
        for name in _list_columns(schema):
            arrays[name] = ParquetRows(path, name, depth=2)
    else:
        suffix = _existing_file(path).suffix.lower()
        if suffix == ".npz":
            for name in _npz_names(path):
                arrays[name], _ = _npz_array(path, name)
        elif suffix == ".npy":
            arrays[""] = _npy_array(path)
        else:
            raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                             "expected .npy, .npz or .parquet")
    info["arrays"] = []
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
        info["arrays"].append(entry)
    return info


# ---------------------------------------------------------------- outputs


def check_output_path(path: str, inputs: list[str]) -> None:
    """Refuse, before any work, an output that would overwrite an input or has no directory."""
    target = Path(path)
    for source in inputs:
        with contextlib.suppress(OSError):
            if target.exists() and target.samefile(source):
                raise UsageError(f"{path}: is also an input file; choose another output path")
    if target.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {str(parent)!r} does not exist")


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through a temporary file in the same directory, then rename it."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.",
                                                 suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
