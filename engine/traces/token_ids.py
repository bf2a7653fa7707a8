"""Token-id traces: ``prompt_token_ids`` (and optionally ``output_token_ids``).

Fields shared with the native format (``request_id``, ``session_id``, ``org``,
``arrival``, ``model``, ``output_length``) are read the same way.
"""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces.records import FieldReader, TraceRecord

NAME = "token-ids"


def looks_like(obj: dict[str, Any]) -> bool:
    return "prompt_token_ids" in obj


def parse(obj: dict[str, Any], path: str, line: int) -> TraceRecord:
    f = FieldReader(obj, path, line)
    prompt = f.token_list("prompt_token_ids")
    assert prompt is not None
    if not prompt:
        raise f.fail("expected 'prompt_token_ids' to hold at least one token")
    outputs = f.token_list("output_token_ids", required=False)
    out_len = f.count_or_none("output_length")
    if outputs is not None and out_len is not None and out_len != len(outputs):
        raise f.fail(f"'output_length' {out_len} disagrees with {len(outputs)} 'output_token_ids'")
    return TraceRecord(
        **f.request_fields(),
        prompt_token_ids=prompt,
        output_token_ids=outputs,
        output_length=len(outputs) if outputs is not None else (out_len or 0),
    )
