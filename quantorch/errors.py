"""The one exception root of quantorch, grouped by what the operator should do.

- :class:`UserInputError` and its children: stop and fix the input (config, ticker, dates, file).
- :class:`RetryableError` and its children: temporary (network, locked database); try again.
- :class:`PluginError`: a user-supplied tool or strategy raised; the message names it.

The CLI maps each group to an exit code and prints one line; ``--debug`` shows the traceback.
Third-party errors are translated at the adapter boundary with ``raise ... from exc``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "QuantorchError",
    "UserInputError",
    "ConfigError",
    "UnknownTickerError",
    "DateRangeError",
    "DataValidationError",
    "RetryableError",
    "DataSourceUnavailableError",
    "DatabaseLockedError",
    "StorageError",
    "PluginError",
    "closest",
    "did_you_mean",
]


class QuantorchError(Exception):
    """Root of every error quantorch raises on purpose."""

    exit_code = 1


class UserInputError(QuantorchError):
    """Bad input: the operator must change a file, a flag or an argument."""

    exit_code = 2


class ConfigError(UserInputError):
    """A configuration or profile file is missing, malformed or invalid."""


class UnknownTickerError(UserInputError):
    """A ticker is not known to the chosen data source."""


class DateRangeError(UserInputError):
    """Dates are unparseable, reversed, or outside the data available."""


class DataValidationError(UserInputError):
    """Imported data is malformed (missing columns, bad dates, duplicates, bad prices)."""


class RetryableError(QuantorchError):
    """A temporary failure: the same command may succeed later."""

    exit_code = 3


class DataSourceUnavailableError(RetryableError):
    """A remote data source could not be reached or returned nothing."""


class DatabaseLockedError(RetryableError):
    """The DuckDB file is held by another process for longer than the retry budget."""


class StorageError(RetryableError):
    """The file system refused a write (full disk, read-only folder); nothing was kept."""


class PluginError(QuantorchError):
    """A user-supplied tool or strategy failed; the message names the plugin."""

    exit_code = 4


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None if none is close."""
    pool = {c.upper(): c for c in candidates}
    match = difflib.get_close_matches(name.upper(), list(pool), n=1, cutoff=0.6)
    return pool[match[0]] if match else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean AAPL?)"`` for the closest candidate, or ``""`` when none is close."""
    hint = closest(name, candidates)
    return f" (did you mean {hint}?)" if hint else ""
