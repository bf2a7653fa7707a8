"""Block-hash traces in the Mooncake format.

One request per line: ``timestamp`` (ms), ``input_length``, ``output_length`` and
``hash_ids``, prefix-chained block ids (512 tokens per block unless
``--trace-block-size`` says otherwise). Optional ``session_id``/``org``/``request_id``
fields are honoured when present.
"""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces.records import FieldReader, TraceRecord

NAME = "mooncake"
DEFAULT_BLOCK_SIZE = 512
_ID_TYPES = {int, str}


def looks_like(obj: dict[str, Any]) -> bool:
    return "hash_ids" in obj


def check_hash_ids(f: FieldReader) -> list[Any]:
    """The line's ``hash_ids``: a list of integers (strings are accepted too)."""
    hash_ids = f.obj.get("hash_ids")
    # set(map(type, ...)) runs in C, which matters on long prompts.
    if not isinstance(hash_ids, list) or not set(map(type, hash_ids)) <= _ID_TYPES:
        raise f.fail("expected 'hash_ids' to be a list of integers")
    return hash_ids


def parse(obj: dict[str, Any], path: str, line: int) -> TraceRecord:
    f = FieldReader(obj, path, line)
    hash_ids = check_hash_ids(f)
    input_length = f.count_or_none("input_length")
    if input_length is None:
        raise f.fail("expected 'input_length' (prompt tokens) with 'hash_ids'")
    ts = f.number_or_none("timestamp")
    return TraceRecord(
        line=line,
        request_id=f.str_or_none("request_id") or f"line-{line}",
        session_id=f.str_or_none("session_id"),
        org=f.str_or_none("org"),
        arrival=None if ts is None else ts / 1000.0,
        hash_ids=hash_ids,
        input_length=input_length,
        output_length=f.count_or_none("output_length") or 0,
    )
