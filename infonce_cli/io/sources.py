"""Where an input's bytes come from, and what they hold.

What a path names:

- ``-`` is standard input.
- A path that exists is that file, whatever characters its name holds
  (``b[1].parquet`` is the file ``b[1].parquet``); a directory is a Parquet
  dataset: its ``*.parquet``/``*.pq`` files, leaving out hidden and ``_`` files.
- A path that does not exist is a glob pattern when it holds ``*``, ``?`` or
  ``[``: its matches, in sorted order, are the parts of one table.
- Anything else is "no such file".

The format comes from the first bytes, never from the name: the .npy magic,
a zip archive (.npz), ``PAR1`` (Parquet), ``ARROW1`` (an Arrow IPC file, also
called Feather v2) or the 0xFFFFFFFF that starts an Arrow IPC stream. Regular
files are read where they lie, a block of rows at a time; streams (standard
input, named pipes, ``/dev/fd/N`` from process substitution) are read into
memory once, since the engine reads rows in any order and more than once, and
every later load of the same stream in the process reuses those bytes.

Every path that appears in a message goes through :func:`printable_path`, so
a name holding a newline still gives a one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
import sys
import threading
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from infonce_cli.errors import InputError

STDIN = "-"
STDIN_NAME = "<stdin>"
PARQUET_SUFFIXES = (".parquet", ".pq")
_PATTERN_CHARACTERS = "*?["
_CHUNK = 2**20


class Format(StrEnum):
    """What an input holds, as its first bytes say (the values name it in messages)."""

    NPY = ".npy"
    NPZ = ".npz"
    PARQUET = "Parquet"
    ARROW_FILE = "Arrow IPC file"
    ARROW_STREAM = "Arrow IPC stream"


TABLE_FORMATS = frozenset({Format.PARQUET, Format.ARROW_FILE, Format.ARROW_STREAM})
_SIGNATURES = (
    (b"\x93NUMPY", Format.NPY),
    (b"PK\x03\x04", Format.NPZ),
    (b"PK\x05\x06", Format.NPZ),  # an archive with no members (np.savez with no arrays)
    (b"PAR1", Format.PARQUET),
    (b"ARROW1", Format.ARROW_FILE),
    (b"\xff\xff\xff\xff", Format.ARROW_STREAM),
)
_SUFFIX_FORMATS = {".npy": Format.NPY, ".npz": Format.NPZ, ".parquet": Format.PARQUET,
                   ".pq": Format.PARQUET, ".arrow": Format.ARROW_FILE,
                   ".feather": Format.ARROW_FILE, ".arrows": Format.ARROW_STREAM}


@dataclass(frozen=True, eq=False)
class Source:
    """One input file or stream, its format read from its first bytes.

    ``path`` is what to open (a regular file is read in place); ``name`` is the path
    as messages show it; ``data`` holds a stream's bytes (None for a regular file).
    """

    path: str
    name: str
    format: Format
    data: memoryview | None = None

    @property
    def is_stream(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.path)


# ---------------------------------------------------------------- names in messages


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable_path(path: str) -> str:
    """A path as a one-line message shows it: control characters (newlines, escapes,
    line separators) and undecodable bytes written as backslash escapes; ``-`` is
    standard input.

    >>> printable_path("a\\nb.npy")
    'a\\\\nb.npy'
    >>> printable_path("-")
    '<stdin>'
    """
    return STDIN_NAME if path == STDIN else printable(path)


def printable(text: str) -> str:
    """Text with its control characters written as backslash escapes, so that it stays
    on one line."""
    return "".join(_escaped(char) for char in text)


def quoted(value: Any) -> str:
    """A value (an id, a column name, a tag) as a message quotes it: its text in quotes,
    on one line.

    >>> quoted("a b")
    "'a b'"
    """
    return printable(repr(str(value)))


def _escaped(char: str) -> str:
    if unicodedata.category(char) not in ("Cc", "Cs", "Zl", "Zp"):
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 (os.fsdecode)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# ---------------------------------------------------------------- what a path names


def is_pattern(path: str) -> bool:
    """Whether a path is read as a glob pattern: it holds ``*``, ``?`` or ``[`` and no
    file of that name exists."""
    return (path != STDIN and any(char in path for char in _PATTERN_CHARACTERS)
            and not _exists(path))


def _exists(path: str) -> bool:
    """Whether anything, even a dangling or looping symbolic link, is at ``path``."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # there, but unreachable: opening it reports why
    return True


def input_paths(path: str) -> list[str]:
    """The files a path names: itself (a file or a stream), a directory's Parquet part
    files, or a pattern's matches (files only), sorted.

    >>> input_paths("-")
    ['-']
    """
    if path == STDIN:
        return [path]
    if is_pattern(path):
        matches = sorted(match for match in glob.glob(path) if not os.path.isdir(match))
        if not matches:
            raise InputError(f"{printable_path(path)}: no such file, and no file matches it "
                             "as a pattern")
        return matches
    if _is_directory(path):
        try:
            entries = list(Path(path).iterdir())
        except OSError as exc:
            raise InputError(_os_problem(printable_path(path), exc)) from None
        parts = sorted(str(entry) for entry in entries
                       if entry.suffix.lower() in PARQUET_SUFFIXES
                       and not entry.name.startswith((".", "_")))
        if not parts:
            raise InputError(f"{printable_path(path)}: no Parquet files found in this "
                             "directory")
        return parts
    return [path]


def check_present(paths: Iterable[str]) -> None:
    """Refuse the first path that names nothing readable (a missing file, an empty pattern
    or directory), without opening any: a pipe among them is not waited on before a
    mistake in another is reported."""
    for path in paths:
        for part in input_paths(path):
            if part != STDIN:
                _stat_input(part, printable_path(part))


def is_dataset(path: str) -> bool:
    """Whether a path names several files read as one table (a directory or a pattern)."""
    return path != STDIN and (is_pattern(path) or _is_directory(path))


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def input_sources(path: str) -> list[Source]:
    """Open what a path names: one source for a file or stream, the parts of a dataset.
    Every part of a dataset must be Parquet or Arrow data."""
    dataset = is_dataset(path)
    sources = [open_source(part) for part in input_paths(path)]
    if dataset:
        for source in sources:
            if source.format not in TABLE_FORMATS:
                raise InputError(f"{source.name}: holds {source.format} data, but the parts "
                                 f"of {printable_path(path)} must be Parquet or Arrow files")
    return sources


def open_source(path: str) -> Source:
    """One input file or stream, its format detected from its first bytes."""
    name = printable_path(path)
    if path == STDIN:
        data = _read_stdin()
        return Source(path, name, _detected(bytes(data[:8]), path, name), data)
    status = _stat_input(path, name)
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"{name}: is a directory, expected a file")
    if stat.S_ISREG(mode):
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError as exc:
            raise InputError(_os_problem(name, exc)) from None
        return Source(path, name, _detected(head, path, name))
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        data = _read_stream(path, name, (status.st_dev, status.st_ino))
        return Source(path, name, _detected(bytes(data[:8]), path, name), data)
    kind = ("a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise InputError(f"{name}: is {kind}, not a file of embeddings")


def _stat_input(path: str, name: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = printable_path(os.readlink(path))
            raise InputError(f"{name}: no such file (a symbolic link to {target}, which "
                             "does not exist)") from None
        raise InputError(f"{name}: no such file") from None
    except OSError as exc:
        raise InputError(_os_problem(name, exc)) from None
    except ValueError:
        raise InputError(f"{name}: a file name cannot hold a NUL character") from None


def _os_problem(name: str, exc: OSError) -> str:
    """One line for an operating-system error about an input."""
    problems = {errno.ELOOP: "symbolic link loop", errno.EACCES: "permission denied",
                errno.ENOENT: "no such file", errno.EISDIR: "is a directory, expected a file",
                errno.ENOTDIR: "a part of the path is not a directory",
                errno.ENAMETOOLONG: "file name too long"}
    if exc.errno in problems:
        return f"{name}: {problems[exc.errno]}"
    return f"{name}: cannot read ({exc.strerror or exc})"


def _detected(head: bytes, path: str, name: str) -> Format:
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if not head:
        raise InputError(f"{name}: empty input" if path == STDIN or not os.path.isfile(path)
                         else f"{name}: empty file")
    expected = _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if expected is not None:
        raise InputError(f"{name}: not a valid {expected} file (its first bytes are not "
                         f"the {expected} signature)")
    raise InputError(f"{name}: not .npy, .npz, Parquet or Arrow IPC data (unrecognised "
                     "first bytes)")


# ---------------------------------------------------------------- streams


_STREAMS: dict[tuple[int, int], memoryview] = {}
"""Bytes of the pipes read so far, by device and inode."""
_STDIN: weakref.WeakKeyDictionary[Any, memoryview] = weakref.WeakKeyDictionary()
"""Bytes of standard input, by the stream object it was read from."""


def forget_streams() -> None:
    """Drop the bytes kept of streams read so far: a later load reads the stream afresh.

    A stream can be read only once, so the loaders keep its bytes for the rest of the
    process (a Parquet stream's vectors and its id column are two loads). A program that
    reads a named pipe repeatedly, expecting new data each time, calls this in between.
    """
    _STREAMS.clear()
    _STDIN.clear()


def _read_stream(path: str, name: str, key: tuple[int, int]) -> memoryview:
    if key in _STREAMS:
        return _STREAMS[key]
    with waiting_notice(f"waiting for input on {name}"):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(_os_problem(name, exc)) from None
        try:
            buffer = bytearray(os.read(descriptor, _CHUNK))
        except OSError as exc:
            os.close(descriptor)
            raise InputError(_os_problem(name, exc)) from None
    try:
        while chunk := os.read(descriptor, _CHUNK):
            buffer += chunk
    except OSError as exc:
        raise InputError(_os_problem(name, exc)) from None
    finally:
        os.close(descriptor)
    data = memoryview(buffer).toreadonly()
    _STREAMS[key] = data
    return data


def _read_stdin() -> memoryview:
    stream = sys.stdin
    if stream is None:
        raise InputError(f"{STDIN_NAME}: standard input is closed")
    binary: Any = getattr(stream, "buffer", stream)
    with contextlib.suppress(KeyError, TypeError):
        return _STDIN[binary]
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if stream.isatty():
            raise InputError(f"{STDIN_NAME}: standard input is a terminal; redirect a file "
                             "or pipe data into it")
    try:
        with waiting_notice(f"waiting for input on {STDIN_NAME}"):
            buffer = bytearray(binary.read1(_CHUNK) if hasattr(binary, "read1")
                               else binary.read(_CHUNK))
        while chunk := binary.read(_CHUNK):
            buffer += chunk
        data = memoryview(buffer).toreadonly()
    except (OSError, ValueError) as exc:
        raise InputError(f"{STDIN_NAME}: cannot read ({first_line(exc)})") from None
    with contextlib.suppress(TypeError):
        _STDIN[binary] = data
    return data


@contextlib.contextmanager
def waiting_notice(message: str) -> Iterator[None]:
    """Call ``io.on_wait(message)`` once if the block is still running after
    ``io.wait_notice_seconds`` (a pipe nobody writes to or reads from yet)."""
    hook, seconds = _wait_settings()
    if hook is None:
        yield
        return
    timer = threading.Timer(seconds, hook, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _wait_settings() -> tuple[Callable[[str], None] | None, float]:
    from infonce_cli import io  # the package, where callers set the hook

    return io.on_wait, io.wait_notice_seconds


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for the end of a one-line error."""
    text = str(exc).strip().splitlines()
    line = printable(" ".join(text[0].split())) if text else type(exc).__name__
    return line if len(line) <= 200 else line[:199] + "…"
