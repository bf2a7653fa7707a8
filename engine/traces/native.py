"""The native kvcache JSONL format (documented in sample_traces/README.md)."""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces.records import FieldReader, TraceRecord, cache_params, tool_list
from kvcache.engine.traces.render import RenderError, render_reply, render_segments

NAME = "native"


def looks_like(obj: dict[str, Any]) -> bool:
    return "messages" in obj and "prompt_token_ids" not in obj


def parse(obj: dict[str, Any], path: str, line: int) -> TraceRecord:
    f = FieldReader(obj, path, line)
    if "messages" not in obj:
        raise f.fail("expected a 'messages' list (native kvcache format)")
    try:
        segments = render_segments(obj.get("tools"), obj.get("system"), obj.get("messages"))
    except RenderError as e:
        raise f.fail(str(e)) from None
    output_text = obj.get("output_text")
    if output_text is not None and not isinstance(output_text, str):
        raise f.fail("expected 'output_text' to be a string")
    output_tool_calls = obj.get("output_tool_calls")
    reply = None
    if output_text is not None or output_tool_calls:
        try:
            reply = render_reply(output_text, output_tool_calls)
        except RenderError as e:
            raise f.fail(f"output_tool_calls: {e}") from None
    return TraceRecord(
        **f.request_fields(),
        segments=segments,
        output_text=reply,
        output_length=f.count_or_none("output_length"),
        tools=tool_list(obj.get("tools")),
        params=cache_params(obj),
    )
