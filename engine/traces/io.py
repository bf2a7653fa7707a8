"""Open a trace (plain, gzip or stdin) and iterate over its non-blank lines."""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kvcache.engine.errors import TraceError


@dataclass(slots=True)
class TraceLine:
    """One non-blank line, with its 1-based line number and its size in bytes.

    ``error`` is set (and ``text`` empty) when the bytes are not valid UTF-8, so
    that the reader can report or skip that one line and go on.
    """

    number: int
    text: str
    nbytes: int
    error: str | None = None


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise TraceError(path, None, "no such file")
    if p.is_dir():
        raise TraceError(path, None, "is a directory, expected a trace file")
    try:
        return p.open("rb")
    except OSError as e:
        raise TraceError(path, None, f"cannot open: {e.strerror}") from e


def trace_size(path: str) -> int | None:
    """Size in bytes of a plain on-disk trace (for progress), else ``None``."""
    if path == "-" or path.endswith(".gz"):
        return None
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def iter_lines(path: str) -> Iterator[TraceLine]:
    """Yield the non-blank lines of ``path`` (``-`` is stdin; ``.gz`` is gunzipped).

    Raises:
        TraceError: missing file, unreadable gzip, or an empty file. A line that is
            not UTF-8 is yielded with ``error`` set instead.
    """
    raw = _open_binary(path)
    is_gzip = path.endswith(".gz")
    if not is_gzip and path == "-":
        # Sniff stdin for the gzip magic so `zcat`-free pipes work too.
        peek = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        is_gzip = peek == b"\x1f\x8b"
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if is_gzip else raw
    seen_any = False
    number = 0
    try:
        for number, bline in enumerate(stream, start=1):
            if not bline.strip():
                continue
            seen_any = True
            try:
                text = bline.decode("utf-8")
            except UnicodeDecodeError as e:
                yield TraceLine(number, "", len(bline), f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark some editors write
            yield TraceLine(number, text, len(bline))
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise TraceError(path, number + 1 if number else None, f"unreadable gzip data ({e})") from e
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()
    if not seen_any:
        raise TraceError(path, None, "the trace is empty (no requests)")


def parse_json_object(line: TraceLine, path: str) -> dict:
    """Parse one line as a JSON object, or raise a ``TraceError`` naming the line."""
    if line.error is not None:
        raise TraceError(path, line.number, line.error)
    try:
        obj = json.loads(line.text)
    except json.JSONDecodeError as e:
        raise TraceError(path, line.number, f"expected a JSON object ({e.msg}, column {e.colno})") from e
    except RecursionError:
        raise TraceError(path, line.number, "expected a JSON object (nested too deeply to parse)") from None
    if not isinstance(obj, dict):
        raise TraceError(path, line.number, f"expected a JSON object, got {type(obj).__name__}")
    return obj


__all__ = ["TraceLine", "iter_lines", "parse_json_object", "trace_size"]
