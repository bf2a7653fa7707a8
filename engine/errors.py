"""Typed errors. The CLI's error table maps each to one line and an exit code."""

from __future__ import annotations


class KVCacheError(Exception):
    """Base class for every error kvcache reports to a user without a traceback."""


class ConfigError(KVCacheError, ValueError):
    """A configuration value is out of range or inconsistent."""


class TraceError(KVCacheError):
    """A trace file cannot be read or parsed.

    Attributes:
        path: the file (``-`` for stdin).
        line: the 1-based line number, or ``None`` when the problem is the whole file.
    """

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class CapacityError(KVCacheError):
    """A request can never fit in the configured KV capacity."""
