"""One exception hierarchy for stfuse.

Every error stfuse raises on purpose is a :class:`StfuseError`. Each subclass also
inherits the matching builtin (``ValueError``, ``FileNotFoundError``, ...) so code
that catches builtins keeps working. Messages name the offending value and say
what to do next. The CLI maps :attr:`StfuseError.exit_code` to the process exit
status:

====  ==========================================================
2     bad usage or bad input (the user can fix the command/files)
3     the data needed is not available (no clear pair, empty search)
4     a remote service failed (STAC API / HTTP)
1     anything else (a bug: please report it)
====  ==========================================================
"""

from __future__ import annotations


class StfuseError(Exception):
    """Base class of every error stfuse raises on purpose."""

    exit_code: int = 1


class InputError(StfuseError, ValueError):
    """An argument or input file is invalid (exit code 2)."""

    exit_code = 2


class MissingFileError(StfuseError, FileNotFoundError):
    """An input file does not exist (exit code 2)."""

    exit_code = 2


class CorruptFileError(InputError):
    """An input file exists but cannot be read as a raster (exit code 2)."""


class GridMismatchError(InputError):
    """Input rasters are not on the same grid and cannot be aligned (exit code 2)."""


class CRSError(InputError):
    """An input has a missing, unknown or inconsistent CRS (exit code 2)."""


class BandError(InputError, KeyError):
    """A requested band does not exist for a sensor/file (exit code 2)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class OutputError(StfuseError, OSError):
    """An output cannot be written (exists, not writable, disk full) (exit code 2)."""

    exit_code = 2


class DataUnavailableError(StfuseError, LookupError):
    """The data needed is not there: empty search, no clear pair, all cloudy (exit code 3)."""

    exit_code = 3


class EmptySearchError(InputError, LookupError):
    """A search found no items for the area/dates asked (exit code 2: change the query)."""


class RemoteServiceError(StfuseError, ConnectionError):
    """A STAC API or asset server failed after retries (exit code 4)."""

    exit_code = 4


class CheckpointError(InputError):
    """A model checkpoint does not match the data (bands, version) (exit code 2)."""


class QualityError(StfuseError, RuntimeError):
    """A prediction failed a quality gate and ``strict`` was requested (exit code 3)."""

    exit_code = 3


__all__ = [
    "StfuseError",
    "InputError",
    "MissingFileError",
    "CorruptFileError",
    "GridMismatchError",
    "CRSError",
    "BandError",
    "OutputError",
    "DataUnavailableError",
    "EmptySearchError",
    "RemoteServiceError",
    "CheckpointError",
    "QualityError",
]
