"""User-facing errors and the exit codes they map to.

Every mistake a user can make (bad path, unknown metric, corrupt file, unsafe
checkpoint, ...) is raised as a subclass of :class:`SatoolError`. The CLI
prints it as one red line on stderr and exits with the class's ``exit_code``;
anything else is a bug and keeps its traceback. The table lives in
docs/exit-codes.md (a test keeps the two in sync).
"""

from __future__ import annotations

from pathlib import Path

# Exit codes (documented in docs/exit-codes.md).
EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_UNSAFE = 4
EXIT_BUSY = 5
EXIT_ENVIRONMENT = 6
EXIT_PLUGIN = 7
EXIT_INTERRUPTED = 130


class SatoolError(Exception):
    """Base class of every error that is the user's to fix (no traceback)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class UsageError(SatoolError):
    """Bad option value, unknown metric/task/stage name, missing argument."""

    exit_code = EXIT_USAGE


class InputError(SatoolError):
    """A file or directory is missing, unreadable, corrupt or inconsistent."""

    exit_code = EXIT_INPUT


class UnsafeFileError(InputError):
    """An untrusted file (checkpoint) asked to run code; it was refused."""

    exit_code = EXIT_UNSAFE


class BusyError(SatoolError):
    """Another process holds the lock on an output (cache, workspace)."""

    exit_code = EXIT_BUSY


class EnvironmentProblem(SatoolError):
    """The machine cannot do it: disk full, read-only output, missing extra."""

    exit_code = EXIT_ENVIRONMENT


class PluginError(SatoolError):
    """A plugin failed to load or register (fatal only with SATOOL_STRICT_PLUGINS=1)."""

    exit_code = EXIT_PLUGIN


ALL_ERRORS: tuple[type[SatoolError], ...] = (
    UsageError,
    InputError,
    UnsafeFileError,
    BusyError,
    EnvironmentProblem,
    PluginError,
)
