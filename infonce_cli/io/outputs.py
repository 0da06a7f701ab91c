"""Outputs: where results go, checked before any work, and written whole or not at all.

- :func:`check_outputs` refuses, before a run starts, two outputs that name one file
  and an output that names an input (after resolving paths and symbolic links), a
  directory, and a directory that does not exist or cannot be written.
- :func:`write_atomically` writes a regular file through a temporary file in the same
  directory and renames it into place, so a failed run leaves the old file (or none)
  and no temporary file. A new file gets the mode the umask gives (0666 & ~umask), a
  replaced file keeps its mode. A target that exists and is not a regular file (a
  device such as /dev/null, a named pipe, /dev/stdout) is written directly: renaming
  over it would replace the device or pipe itself.

Every failure to write is one ``OutputError`` naming the file and the system's reason,
e.g. ``/dev/full: cannot write (No space left on device)``.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from infonce_cli.errors import InputError, OutputError, UsageError, arg

from .sources import STDIN, first_line, input_paths, is_pattern, printable, printable_path

STDOUT = "-"
_MAX_LINKS = 40


# ---------------------------------------------------------------- checks before a run


@dataclass(frozen=True)
class _Place:
    """Where a path leads: its resolved path, and the file's identity when it exists."""

    path: str
    resolved: str
    identity: tuple[int, int] | None
    character_device: bool = False

    def same(self, other: _Place) -> bool:
        return self.resolved == other.resolved or (
            self.identity is not None and self.identity == other.identity)


def _place(path: str) -> _Place:
    try:
        resolved = os.path.realpath(path)
    except ValueError:  # a NUL character: refused where the path is used
        resolved = path
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return _Place(path, resolved, None)
    return _Place(path, resolved, (status.st_dev, status.st_ino),
                  stat.S_ISCHR(status.st_mode))


def check_outputs(outputs: Mapping[str, str | None], inputs: Sequence[str]) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, or
    that cannot be written where they are.

    ``outputs`` maps an argument's name (``output``, ``per_sample``, ``plot``, ``run``)
    to its path or None; ``-`` (standard output) is not a file. ``inputs`` are every
    input path: embeddings, id files, qrels. Two outputs on one character device
    (``/dev/null``) are allowed.

    >>> check_outputs({"output": "s.jsonl", "per_sample": "./s.jsonl"}, [])
    Traceback (most recent call last):
    infonce_cli.errors.UsageError: per_sample and output name the same file s.jsonl
    """
    on_stdout = [name for name, path in outputs.items() if path == STDOUT]
    if len(on_stdout) > 1:
        raise UsageError(f"{arg(on_stdout[0])} and {arg(on_stdout[1])} both write to standard "
                         "output (-): send one of them to a file")
    taken = _input_places(inputs)
    chosen: list[tuple[str, _Place]] = []
    for name, path in outputs.items():
        if path is None or path == STDOUT:
            continue
        place = _place(path)
        for other, earlier in chosen:
            if place.same(earlier) and not place.character_device:
                raise UsageError(f"{arg(name)} and {arg(other)} name the same file "
                                 f"{printable_path(earlier.path)}")
        _refuse_an_input(place, taken, f"{arg(name)} {printable_path(path)}")
        _check_location(path)
        chosen.append((name, place))


def check_output_path(path: str, inputs: list[str]) -> None:
    """Refuse, before any work, an output that would overwrite an input, is a directory
    or has nowhere to go (one output; :func:`check_outputs` checks several at once)."""
    if path == STDOUT:
        return
    _refuse_an_input(_place(path), _input_places(inputs), printable_path(path))
    _check_location(path)


@dataclass(frozen=True)
class _Inputs:
    places: list[_Place]
    directories: list[str]  # resolved directories read as Parquet datasets
    patterns: list[str]  # absolute patterns


def _input_places(inputs: Sequence[str]) -> _Inputs:
    places, directories, patterns = [], [], []
    for source in inputs:
        if source == STDIN:
            continue
        places.append(_place(source))
        if is_pattern(source):
            patterns.append(os.path.abspath(source))
        elif os.path.isdir(source):
            directories.append(os.path.realpath(source))
        with contextlib.suppress(InputError):  # a missing input is the loader's to report
            places += [_place(part) for part in input_paths(source) if part != source]
    return _Inputs(places, directories, patterns)


def _refuse_an_input(place: _Place, inputs: _Inputs, label: str) -> None:
    for source in inputs.places:
        if place.same(source):
            also = (f" ({printable_path(source.path)})"
                    if os.path.normpath(source.path) != os.path.normpath(place.path) else "")
            raise UsageError(f"{label} is also an input file{also}; choose another path")
    parent = os.path.dirname(place.resolved)
    name = os.path.basename(place.resolved)
    for directory in inputs.directories:
        if parent == directory and name.lower().endswith((".parquet", ".pq")) \
                and not name.startswith((".", "_")):
            raise UsageError(f"{label} would become a part of the input directory "
                             f"{printable(directory)}; choose another path")
    for pattern in inputs.patterns:
        if fnmatch.fnmatchcase(os.path.abspath(place.path), pattern):
            raise UsageError(f"{label} matches the input pattern {printable(pattern)}; "
                             "choose another path")


def _target_status(path: str, name: str) -> os.stat_result | None:
    """What an output path names now (None: nothing yet); a directory is refused."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OutputError(_problem(name, exc)) from None
    if stat.S_ISDIR(status.st_mode):
        raise OutputError(f"{name}: is a directory; give a file name")
    return status


def _check_location(path: str) -> None:
    name = printable_path(path)
    status = _target_status(path, name)
    if status is not None and not stat.S_ISREG(status.st_mode):
        return  # a device or a pipe: written directly
    target = os.path.realpath(path)
    parent = os.path.dirname(target) or "."
    if not os.path.isdir(parent):
        shown = os.path.dirname(path) or "."
        raise OutputError(f"{name}: directory '{printable(shown)}' does not exist")
    writable = os.access(parent, os.W_OK | os.X_OK) and (
        status is None or os.access(target, os.W_OK))
    if not writable:
        raise OutputError(_denied(name, parent))


def _denied(name: str, directory: str) -> str:
    """Why a file cannot be written where ``os.access`` says no: a read-only file system,
    or permissions."""
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"{name}: cannot write ({os.strerror(errno.EROFS if read_only else errno.EACCES)})"


def _problem(name: str, exc: OSError | ValueError) -> str:
    if isinstance(exc, ValueError):
        return f"{name}: a file name cannot hold a NUL character"
    if exc.errno == errno.ELOOP:
        return f"{name}: symbolic link loop"
    return f"{name}: cannot write ({exc.strerror or first_line(exc)})"


# ---------------------------------------------------------------- writing


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write an output file through ``write(handle)``: a regular file (or a new one)
    through a temporary file in its directory renamed into place, a device, a pipe or
    one of this process's descriptors (``/dev/stdout``) directly.

    A symbolic link is written through: the file it points to is replaced. Any failure
    to write is an ``OutputError`` naming the file, and leaves no temporary file behind.
    """
    name = printable_path(path)
    own = _own_descriptor(path)
    if own is not None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _write_directly(name, lambda: os.dup(own), write)
        return
    status = _target_status(path, name)
    if status is not None and not stat.S_ISREG(status.st_mode):
        _write_directly(name, lambda: os.open(path, os.O_WRONLY | os.O_CLOEXEC), write)
        return
    target = os.path.realpath(path) if os.path.islink(path) else path
    if status is not None and not os.access(target, os.W_OK):
        raise OutputError(_denied(name, os.path.dirname(target) or "."))
    directory, base = os.path.split(target)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=directory or ".", prefix=f".{base[:200]}.",
                                                 suffix=".tmp")
    except OSError as exc:
        raise OutputError(_problem(name, exc)) from None
    try:
        _set_mode(descriptor, status)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            _sync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise OutputError(_problem(name, exc)) from None
        raise


def _write_directly(name: str, open_target: Callable[[], int],
                    write: Callable[[IO[bytes]], None]) -> None:
    from .sources import waiting_notice

    try:
        with waiting_notice(f"waiting for a reader of {name}"):
            descriptor = open_target()
    except OSError as exc:
        raise OutputError(_problem(name, exc)) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
    except OSError as exc:
        raise OutputError(_problem(name, exc)) from None


def _own_descriptor(path: str) -> int | None:
    """The descriptor number when a path leads (through symbolic links such as
    /dev/stdout) to one of this process's open descriptors, /proc/self/fd/N."""
    own = re.compile(rf"/proc/{os.getpid()}(/task/\d+)?/fd")
    current = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        with contextlib.suppress(OSError, ValueError):
            if own.fullmatch(os.path.realpath(os.path.dirname(current))):
                number = os.path.basename(current)
                return int(number) if number.isdigit() else None
        try:
            link = os.readlink(current)
        except (OSError, ValueError):
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), link))
    return None


def _set_mode(descriptor: int, replaced: os.stat_result | None) -> None:
    """Give a new file the mode the umask allows (mkstemp creates it 0600), and a
    replacing file the mode and, where permitted, the owner of the file it replaces."""
    if replaced is None:
        os.fchmod(descriptor, 0o666 & ~_umask())
        return
    if (replaced.st_uid, replaced.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):
            os.fchown(descriptor, replaced.st_uid, replaced.st_gid)
    os.fchmod(descriptor, stat.S_IMODE(replaced.st_mode))


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync(descriptor: int) -> None:
    """Flush a file to its disk before it replaces another; file systems that cannot
    (some network and pseudo file systems) are left as they are."""
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
            raise
