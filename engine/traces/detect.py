"""Trace format detection from the first line, and the registry of readers."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kvcache.engine.errors import TraceError
from kvcache.engine.traces import mooncake, native, token_ids

# Order matters: the first reader whose `looks_like` accepts the line wins.
READERS: dict[str, ModuleType] = {
    mooncake.NAME: mooncake,
    token_ids.NAME: token_ids,
    native.NAME: native,
}
FORMATS: tuple[str, ...] = tuple(READERS)

_DESCRIPTIONS = {
    mooncake.NAME: "Mooncake block-hash trace ('hash_ids', 'input_length')",
    token_ids.NAME: "token-id trace ('prompt_token_ids')",
    native.NAME: "native kvcache JSONL ('messages', optional 'tools'/'system')",
}


def supported_formats() -> str:
    """One line listing the readable formats, for error messages."""
    return "; ".join(f"{k}: {v}" for k, v in _DESCRIPTIONS.items())


def detect_format(obj: dict[str, Any], path: str, line: int) -> str:
    """Name of the format the first record is in.

    Raises:
        TraceError: no reader recognises the record.
    """
    for name, reader in READERS.items():
        if reader.looks_like(obj):
            return name
    keys = ", ".join(sorted(obj)[:8]) or "none"
    raise TraceError(
        path, line, f"unknown trace format (keys: {keys}); supported formats are {supported_formats()}"
    )
