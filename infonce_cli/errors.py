"""Domain errors and exit codes. Standard library only.

The library raises these; the CLI turns each into one ``error: …`` line on
stderr and the exit code the error carries, in one place. A message names the
argument it is about with :func:`arg`: a Python caller reads the argument's
name (``temperature must be > 0``), a user of the command line its flag
(``--temperature must be > 0``).
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes of the ``infonce`` command."""

    OK = 0
    DATA_ERROR = 1
    USAGE_ERROR = 2
    GATE_FAILED = 3
    INTERRUPTED = 130


_MARK = "\x1f"
_ARGUMENT = re.compile(f"{_MARK}([a-z0-9_]+){_MARK}")


def arg(name: str) -> str:
    """An argument's name inside an error message, shown as ``name`` from Python and as its
    flag ``--name`` (underscores as dashes) on the command line.

    >>> str(UsageError(f"{arg('batch_size')} must be at least 1"))
    'batch_size must be at least 1'
    >>> UsageError(f"{arg('batch_size')} must be at least 1").for_command_line()
    '--batch-size must be at least 1'
    """
    return f"{_MARK}{name}{_MARK}"


def with_names(text: str) -> str:
    """A message with its arguments named as in Python."""
    return _ARGUMENT.sub(lambda match: match.group(1), text)


def with_flags(text: str) -> str:
    """A message with its arguments named by their command-line flags."""
    return _ARGUMENT.sub(lambda match: "--" + match.group(1).replace("_", "-"), text)


class Note(str):
    """A note on a result (stderr on the command line, ``notes`` in JSON) that may name
    arguments with :func:`arg`; ``str()`` names them as in Python.

    >>> note = Note(f"try {arg('mask_duplicates')}")
    >>> str(note), note.for_command_line()
    ('try mask_duplicates', 'try --mask-duplicates')
    """

    def __str__(self) -> str:
        return with_names(str.__str__(self))

    def for_command_line(self) -> str:
        return with_flags(str.__str__(self))


class InfonceError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code: ExitCode = ExitCode.DATA_ERROR

    def __str__(self) -> str:
        return with_names(super().__str__())

    def for_command_line(self) -> str:
        """The message with every argument named by its command-line flag."""
        return with_flags(super().__str__())


class InputError(InfonceError):
    """An input file or array is unreadable, malformed or inconsistent (exit 1)."""


class OutputError(InfonceError):
    """An output cannot be written where the user asked (exit 1)."""


class UsageError(InfonceError):
    """Options that contradict each other or are out of range (exit 2)."""

    exit_code = ExitCode.USAGE_ERROR


class GateFailed(InfonceError):
    """A quality gate was not met (exit 3). ``result`` is the result that failed it, which
    is still worth showing."""

    exit_code = ExitCode.GATE_FAILED

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
