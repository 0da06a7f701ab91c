""".npy and .npz inputs: headers checked before any data is read, pickles never loaded.

A regular .npy file is read a block of rows at a time (:class:`NpyRows`); the
bytes of a stream are already in memory and become an array without a copy.
"""

from __future__ import annotations

import contextlib
import io as binary_io
import os
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from infonce_cli.errors import InputError

from .checks import check_float_dtype
from .sources import Source, first_line, printable_path

_HEADER_BYTES = 2**16
"""More than any .npy header numpy accepts (it refuses headers over 10,000 bytes)."""


class RowReader:
    """What the file readers share: a length, and conversion of all rows to an array."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    ndim: int
    size: int

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray[Any, Any]:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        """All rows, read at once (for small inputs and tests)."""
        rows = self[0:self.shape[0]]
        return rows if dtype is None else rows.astype(dtype)


class NpyRows(RowReader):
    """Rows of an .npy file, read on demand with ``os.preadv`` into fresh arrays.

    Slicing with ``[start:stop]`` reads just those rows. Nothing is memory-mapped, so
    the process's resident memory holds only the blocks in use, however large the
    file (a mapped file counts every page it has touched). ``name`` is the file as
    messages show it.
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                 offset: int, name: str | None = None) -> None:
        self.path, self.shape, self.dtype, self.offset = path, shape, dtype, offset
        self.name = name or path
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
        try:
            with open(self.path, "rb", buffering=0) as handle:
                done, total = 0, count * self._row_bytes
                position = self.offset + start * self._row_bytes
                while done < total:
                    read = os.preadv(handle.fileno(), [view[done:]], position + done)
                    if read == 0:
                        raise InputError(f"{self.name}: ended early while reading rows "
                                         f"{start}..{stop}")
                    done += read
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read rows {start}..{stop} "
                             f"({exc.strerror or exc})") from None
        return out


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[Any]:
    if source.data is not None:
        yield binary_io.BytesIO(source.data[:_HEADER_BYTES])
        return
    with open(source.path, "rb") as handle:
        yield handle


def npy_header(source: Source) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """Shape, Fortran order, dtype and data offset of an .npy input, its header parsed
    (never evaluated) and checked against its size; Python objects are refused."""
    with _opened(source) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except Exception as exc:  # numpy's header parser raises many kinds
            raise InputError(f"{source.name}: not a valid .npy file "
                             f"({first_line(exc)})") from None
        offset = handle.tell()
    if any(int(size) < 0 for size in shape):
        raise InputError(f"{source.name}: not a valid .npy file (its header gives a negative "
                         f"size in shape {tuple(int(size) for size in shape)})")
    if dtype.hasobject:
        raise InputError(f"{source.name}: holds Python objects (pickled data), which are "
                         "never loaded; save it without them (floats for vectors, strings or "
                         "integers for ids)")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    actual = source.size - offset
    if actual < expected:
        raise InputError(f"{source.name}: truncated: the header promises shape "
                         f"{tuple(shape)} ({expected} bytes of data) but the file holds "
                         f"{actual}")
    return tuple(int(x) for x in shape), bool(fortran), dtype, offset


def npy_values(source: Source, floats_only: bool = True) -> np.ndarray[Any, Any] | NpyRows:
    """The array of an .npy input: rows read on demand from a regular file, an array over
    a stream's bytes. ``floats_only`` refuses other dtypes before any data is read."""
    shape, fortran, dtype, offset = npy_header(source)
    if floats_only:
        check_float_dtype(dtype, source.name)
    count = int(np.prod(shape, dtype=object))
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    order: Literal["C", "F"] = "F" if fortran else "C"
    if source.data is not None:
        flat = np.frombuffer(source.data, dtype=dtype, count=count, offset=offset)
    elif fortran or len(shape) < 2:
        # Rows of a Fortran-ordered array are not contiguous on disk; such files (and
        # 1-D ones) are small in practice and are read whole.
        try:
            flat = np.fromfile(source.path, dtype=dtype, count=count, offset=offset)
        except (OSError, ValueError) as exc:
            raise InputError(f"{source.name}: cannot read ({first_line(exc)})") from None
    else:
        return NpyRows(source.path, shape, dtype, offset, source.name)
    array = flat.reshape(shape, order=order)
    return np.ascontiguousarray(array) if fortran else array


def npy_ids(source: Source) -> np.ndarray[Any, Any]:
    """Ids from an .npy input: integers or strings, never objects."""
    values = npy_values(source, floats_only=False)
    array = np.asarray(values)
    if array.dtype.kind not in "iuUS":
        raise InputError(f"{source.name}: ids must be integers or strings, got "
                         f"{array.dtype.name}")
    return array


# ---------------------------------------------------------------- .npz


@contextlib.contextmanager
def npz_archive(source: Source) -> Iterator[Any]:
    """An open .npz archive; the file is closed whatever happens (np.load on a path
    leaks its handle when the zip is corrupt)."""
    with contextlib.ExitStack() as stack:
        if source.data is not None:
            handle: Any = binary_io.BytesIO(source.data)
        else:
            try:
                handle = stack.enter_context(open(source.path, "rb"))
            except OSError as exc:
                raise InputError(f"{source.name}: cannot read ({exc.strerror})") from None
        try:
            archive = np.load(handle, allow_pickle=False)
        except Exception as exc:  # zipfile and numpy raise many kinds here
            raise InputError(f"{source.name}: not a valid .npz file "
                             f"({first_line(exc)})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{source.name}: not a valid .npz file (it is a plain .npy)")
        with archive:
            yield archive


def npz_names(source: Source) -> list[str]:
    with npz_archive(source) as archive:
        return list(archive.files)


def npz_array(source: Source, key: str | None) -> tuple[np.ndarray[Any, Any], str]:
    """One array of an .npz input (the only one when ``key`` is None) and its label."""
    with npz_archive(source) as archive:
        names = list(archive.files)
        listed = ", ".join(printable_path(name) for name in names) or "none"
        if key is None:
            if len(names) != 1:
                raise InputError(f"{source.name}: holds {len(names)} arrays ({listed}); "
                                 "choose one with the matching --*-key option")
            key = names[0]
        elif key not in names:
            raise InputError(f"{source.name}: no array {key!r}; arrays: {listed}")
        label = f"{source.name}[{printable_path(key)}]"
        try:
            value = archive[key]
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise InputError(f"{label}: holds Python objects (pickled data), which are "
                                 "never loaded; save it without them (floats for vectors, "
                                 "strings or integers for ids)") from None
            raise InputError(f"{label}: unreadable ({first_line(exc)})") from None
        except Exception as exc:
            raise InputError(f"{label}: unreadable ({first_line(exc)})") from None
    if not isinstance(value, np.ndarray):
        raise InputError(f"{label}: not a NumPy array")
    return value, label
