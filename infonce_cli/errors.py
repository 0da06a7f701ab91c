"""Domain errors and exit codes. Standard library only.

The library raises these; the CLI turns each into one ``error: …`` line on
stderr and the exit code the error carries, in one place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``infonce`` command."""

    OK = 0
    DATA_ERROR = 1
    USAGE_ERROR = 2
    GATE_FAILED = 3
    INTERRUPTED = 130


class InfonceError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code: ExitCode = ExitCode.DATA_ERROR


class InputError(InfonceError):
    """An input file or array is unreadable, malformed or inconsistent (exit 1)."""


class OutputError(InfonceError):
    """An output cannot be written where the user asked (exit 1)."""


class UsageError(InfonceError):
    """Options that contradict each other or are out of range (exit 2)."""

    exit_code = ExitCode.USAGE_ERROR
