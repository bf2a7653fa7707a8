"""Whole-file log formats (Claude Code transcripts, Codex rollouts): files and folders.

Line formats turn each line into a request on its own. Agent logs do not: a call
is rebuilt from many lines (a parent chain, repeated usage lines, events), so
their readers take a whole file at once through::

    read_records(path, objects, options) -> Iterator[TraceRecord | SkippedLine]

where ``objects`` yields ``(line number, JSON object)`` for every parseable line.
This module finds the files (a single file, or every ``*.jsonl`` below a folder,
such as a whole ``~/.claude/projects`` tree), feeds each to its reader, and turns
unreadable lines and the readers' ``SkippedLine``s into errors or skips. The
stream then replays all calls of all files in arrival order, so that a subagent's
first call can hit what its parent session cached moments before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kvcache.engine.errors import TraceError
from kvcache.engine.traces.detect import READERS, detect_format
from kvcache.engine.traces.io import iter_lines, parse_json_object
from kvcache.engine.traces.records import ReaderOptions, SkippedLine, TraceRecord


def is_file_level(fmt: str | None) -> bool:
    """Whether a format's reader takes whole files."""
    return fmt is not None and getattr(READERS.get(fmt), "FILE_LEVEL", False)


# Whole-document JSON logs (OpenHands trajectories, SWE-agent .traj files).
DOCUMENT_SUFFIXES = (".json", ".traj")


def log_files(path: str) -> list[str]:
    """Every ``*.jsonl``, ``*.json`` and ``*.traj`` below a folder, sorted."""
    files = sorted(str(p) for p in Path(path).rglob("*") if p.is_file() and p.suffix in (".jsonl", *DOCUMENT_SUFFIXES))
    if not files:
        raise TraceError(path, None, "the folder holds no .jsonl, .json or .traj files")
    return files


def is_document(path: str) -> bool:
    """Whether a file is one JSON document rather than JSON lines."""
    return path.endswith(DOCUMENT_SUFFIXES)


def read_document(path: str) -> Any:
    """Parse a whole-document JSON file (line 1 names it in errors)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise TraceError(path, None, f"cannot open: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise TraceError(path, None, f"not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise TraceError(path, e.lineno, f"expected a JSON document ({e.msg}, column {e.colno})") from e


def first_object(path: str, skip_invalid: bool, skipped: list[SkippedLine]) -> dict:
    """The first parseable JSON object of a file (to detect its format).

    For a whole-document file it is the document itself, wrapped as
    ``{"document": ...}`` when it is not an object (OpenHands logs are lists).
    """
    if is_document(path):
        doc = read_document(path)
        return doc if isinstance(doc, dict) else {"document": doc}
    for line in iter_lines(path):
        try:
            return parse_json_object(line, path)
        except TraceError as e:
            if not skip_invalid:
                raise
            skipped.append(SkippedLine(line.number, e.message, path))
    raise TraceError(path, None, "no valid line in the file")


def is_blank(path: str) -> bool:
    """Whether a file holds nothing but whitespace (Claude Code leaves such files)."""
    return _blank(path)


def _blank(path: str) -> bool:
    return not Path(path).read_bytes().strip() if not path.endswith(".gz") else False


def read_log_records(
    files: list[str],
    input_format: str,
    options: ReaderOptions,
    skip_invalid: bool,
    skipped: list[SkippedLine],
    on_bytes: Callable[[int], None],
    formats: set[str] | None = None,
    warnings: list[str] | None = None,
) -> Iterator[TraceRecord]:
    """Records from every file, file by file (the caller orders them by arrival).

    In a folder, an empty file (Claude Code leaves some) is passed over with a
    warning rather than failing the whole folder. ``formats`` collects the
    formats met.
    """
    for path in files:
        if len(files) > 1 and _blank(path):
            if warnings is not None:
                warnings.append(f"{path}: empty file passed over")
            continue
        fmt = input_format
        if fmt == "auto":
            obj = first_object(path, skip_invalid, skipped)
            fmt = detect_format(obj, path, 1)
        if not is_file_level(fmt):
            raise TraceError(path, None, f"is a {fmt} trace; a folder may hold only agent logs (Claude Code, Codex, OpenHands, SWE-agent)")
        reader = READERS[fmt]
        if formats is not None:
            formats.add(fmt)
        for item in reader.read_records(path, _objects(path, skip_invalid, skipped, on_bytes), options):
            if isinstance(item, SkippedLine):
                if not skip_invalid:
                    raise TraceError(item.path or path, item.line, item.reason)
                skipped.append(item if item.path else SkippedLine(item.line, item.reason, path))
            else:
                if item.path is None:
                    item.path = path
                yield item


def _objects(
    path: str, skip_invalid: bool, skipped: list[SkippedLine], on_bytes: Callable[[int], None]
) -> Iterator[tuple[int, dict]]:
    if is_document(path):
        on_bytes(Path(path).stat().st_size)
        yield 1, first_object(path, skip_invalid, skipped)
        return
    for line in iter_lines(path):
        on_bytes(line.nbytes)
        try:
            obj = parse_json_object(line, path)
        except TraceError as e:
            if not skip_invalid:
                raise
            skipped.append(SkippedLine(line.number, e.message, path))
            continue
        yield line.number, obj
