"""The format-neutral record every trace reader produces, and field checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvcache.engine.errors import TraceError


@dataclass(slots=True)
class TraceRecord:
    """One request as read from a trace, before tokenizing and hashing.

    Exactly one of ``segments``, ``prompt_token_ids`` or ``hash_ids`` is set:

    * ``segments``: rendered prompt text, one string per template segment; each
      segment is tokenized on its own (and memoised).
    * ``prompt_token_ids``: the prompt as token ids.
    * ``hash_ids``: prefix-chained block ids at the trace's own block size.
    """

    line: int
    request_id: str
    session_id: str | None = None
    org: str | None = None
    arrival: float | None = None
    model: str | None = None
    segments: list[str] | None = None
    prompt_token_ids: list[int] | None = None
    hash_ids: list[Any] | None = None
    input_length: int | None = None
    output_text: str | None = None
    output_token_ids: list[int] | None = None
    output_length: int | None = None
    lora_name: str | None = None


class FieldReader:
    """Typed access to a JSON object's fields that names the file and line on error."""

    def __init__(self, obj: dict[str, Any], path: str, line: int) -> None:
        self.obj = obj
        self.path = path
        self.line = line

    def fail(self, message: str) -> TraceError:
        return TraceError(self.path, self.line, message)

    def request_fields(self) -> dict[str, Any]:
        """The fields every request-shaped format shares (native, token ids)."""
        return {
            "line": self.line,
            "request_id": self.str_or_none("request_id") or f"line-{self.line}",
            "session_id": self.str_or_none("session_id"),
            "org": self.str_or_none("org"),
            "arrival": self.number_or_none("arrival"),
            "model": self.str_or_none("model"),
            "lora_name": self.str_or_none("lora"),
        }

    def str_or_none(self, key: str) -> str | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return str(v)
        raise self.fail(f"expected '{key}' to be a string, got {type(v).__name__}")

    def number_or_none(self, key: str) -> float | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(f"expected '{key}' to be a number, got {type(v).__name__}")
        return float(v)

    def count_or_none(self, key: str) -> int | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(f"expected '{key}' to be a non-negative integer, got {v!r}")
        return v

    def int_list(self, key: str, *, required: bool = True) -> list[int] | None:
        v = self.obj.get(key)
        if v is None:
            if required:
                raise self.fail(f"expected a '{key}' list of integers")
            return None
        if not isinstance(v, list) or not all(type(x) is int for x in v):
            raise self.fail(f"expected '{key}' to be a list of integers")
        return v
