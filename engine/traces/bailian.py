"""Bailian (Alibaba Cloud Model Studio) block-hash traces.

The public Qwen traces (``qwen_traceA_blksz_16.jsonl`` and friends) carry one
request per line::

    {"chat_id": 159, "parent_chat_id": 55, "timestamp": 61.114, "input_length": 521,
     "output_length": 132, "type": "text", "turn": 2, "hash_ids": [1089, 1090, ...]}

``hash_ids`` are prefix-chained block ids at 16 tokens per block (the ``blksz``
in the file name; ``--trace-block-size`` overrides). ``timestamp`` is read as
seconds since the trace start. A conversation is the chain of ``parent_chat_id``
links back to a root (``-1``): kvcache names the session after that root's
``chat_id``. A parent that is not in the file (a sampled trace) starts a
session of its own, named after the missing parent.
"""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces.mooncake import check_hash_ids
from kvcache.engine.traces.records import FieldReader, TraceRecord

NAME = "bailian"
DEFAULT_BLOCK_SIZE = 16
_NO_PARENT = (-1, "-1", None, "")


def looks_like(obj: dict[str, Any]) -> bool:
    return "hash_ids" in obj and "chat_id" in obj


class Parser:
    """Parses lines in order, remembering each chat's session root."""

    def __init__(self) -> None:
        self._root: dict[str, str] = {}

    def __call__(self, obj: dict[str, Any], path: str, line: int) -> TraceRecord:
        f = FieldReader(obj, path, line)
        chat_id = f.str_or_none("chat_id")
        if chat_id is None:
            raise f.fail("expected a 'chat_id'")
        hash_ids = check_hash_ids(f)
        input_length = f.count_or_none("input_length")
        if input_length is None:
            raise f.fail("expected 'input_length' (prompt tokens) with 'hash_ids'")
        parent = obj.get("parent_chat_id")
        if parent in _NO_PARENT:
            session = chat_id
        else:
            parent_id = f.str_or_none("parent_chat_id")
            assert parent_id is not None
            session = self._root.get(parent_id, parent_id)
        self._root[chat_id] = session
        return TraceRecord(
            line=line,
            request_id=chat_id,
            session_id=session,
            org=f.str_or_none("org"),
            arrival=f.number_or_none("timestamp"),
            hash_ids=hash_ids,
            input_length=input_length,
            output_length=f.count_or_none("output_length") or 0,
        )
