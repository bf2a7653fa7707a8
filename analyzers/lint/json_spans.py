"""Parse JSON and remember where every value is, so findings point at lines.

``json.loads`` gives no positions. This scanner walks the text once, decoding
strings with the standard library's own ``scanstring`` and everything else
with ``raw_decode``, and records each value's character span under its path
(object keys and array indexes from the root, ``()`` for the root itself).
"""

from __future__ import annotations

import json
from json.decoder import scanstring
from typing import Any

_WS = " \t\n\r"
_DECODER = json.JSONDecoder()

Path = tuple[str | int, ...]


class JSONSpanError(ValueError):
    """Invalid JSON, with the 1-based line and column where parsing failed."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


def parse_with_spans(text: str) -> tuple[Any, dict[Path, tuple[int, int]]]:
    """The parsed value and ``{path: (start, end)}`` for every value in it.

    Raises:
        JSONSpanError: the text is not one JSON value.
    """
    try:
        json.loads(text)  # the standard parser decides validity and gives its message
    except json.JSONDecodeError as e:
        raise JSONSpanError(e.msg, e.lineno, e.colno) from None
    spans: dict[Path, tuple[int, int]] = {}
    value, end = _value(text, _skip(text, 0), (), spans)
    return value, spans


def _skip(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _value(text: str, i: int, path: Path, spans: dict[Path, tuple[int, int]]) -> tuple[Any, int]:
    ch = text[i]
    if ch == "{":
        out: dict[str, Any] = {}
        j = _skip(text, i + 1)
        if text[j] == "}":
            spans[path] = (i, j + 1)
            return out, j + 1
        while True:
            key, j = scanstring(text, j + 1)
            j = _skip(text, _skip(text, j) + 1)  # past the colon
            out[key], j = _value(text, j, (*path, key), spans)
            j = _skip(text, j)
            if text[j] == "}":
                spans[path] = (i, j + 1)
                return out, j + 1
            j = _skip(text, j + 1)  # past the comma
    if ch == "[":
        items: list[Any] = []
        j = _skip(text, i + 1)
        if text[j] == "]":
            spans[path] = (i, j + 1)
            return items, j + 1
        while True:
            item, j = _value(text, j, (*path, len(items)), spans)
            items.append(item)
            j = _skip(text, j)
            if text[j] == "]":
                spans[path] = (i, j + 1)
                return items, j + 1
            j = _skip(text, j + 1)
    if ch == '"':
        s, j = scanstring(text, i + 1)
        spans[path] = (i, j)
        return s, j
    v, j = _DECODER.raw_decode(text, i)
    spans[path] = (i, j)
    return v, j
