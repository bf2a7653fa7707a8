"""Anthropic Messages request bodies, one per line (and Message Batches lines).

A line is a body ``{"model", "max_tokens", "system"?: str | [blocks], "tools"?,
"messages": [...]}`` or a Message Batches input line ``{"custom_id", "params":
{...}}``. Which files this reader takes is :mod:`bodies`' rule. The prompt is
rendered by :func:`anthropic_render.render_request` in Anthropic's hash order,
tools -> system -> messages, ``cache_control`` markers dropped.

**Breakpoints.** :func:`breakpoints` gives the segments that end at a marker.
Segments are coarser than blocks: every tool is in one segment, the system
blocks in one, a message's blocks in its body segment. A marker on a block
that is not the last of its segment is reported at that segment's end (the
breakpoint moves later by the rest of the segment; adding a marker must not
move a token, so segments are not split at markers). A top-level
``cache_control`` (automatic caching) marks the last message's body. Indices
are sorted and unique; Anthropic rejects a request with more than 4 markers
(automatic caching takes one of the 4), so a body that did reach the API has
at most 4.

**Fields.** ``request_id``: ``custom_id``, else the recorded message's ``id``,
else ``line-{n}``. ``session_id``: ``metadata.user_id`` (the only metadata the
API takes). ``org``: ``None``. ``arrival``: ``None`` (bodies carry no time).
``cache_ttl``: ``1h``/``5m`` from the usage's ``cache_creation`` split, else the
``ttl`` of the last marker (``5m`` when it names none), else ``None``.

**Recorded response** (optional): ``response`` on the line or in the body is a
Message (or a batch result ``{"type": "succeeded", "message": {...}}``). Its
``content`` becomes the reply, rendered as the next turn's assistant body;
``usage.output_tokens`` the output length. **Billed** (the response's usage,
else a top-level ``usage``): prompt = ``input_tokens +
cache_read_input_tokens + cache_creation_input_tokens`` (``input_tokens``
excludes the cache), cached = read, written = creation; missing cache fields
count 0. :func:`load_batch_results` reads a Message Batches results file.
"""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces import anthropic_render as ar
from kvcache.engine.traces import bodies
from kvcache.engine.traces.bodies import attach_billed
from kvcache.engine.traces.records import BilledUsage, FieldReader, TraceRecord, cache_params, tool_list
from kvcache.engine.traces.render import RenderError

NAME = bodies.ANTHROPIC
MAX_BREAKPOINTS = 4  # Anthropic's limit per request, automatic caching included
__all__ = ["MAX_BREAKPOINTS", "NAME", "attach_billed", "breakpoints", "load_batch_results", "looks_like", "parse"]


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a file's first JSON object is a Messages body or a Message Batches line."""
    return bodies.flavour(obj) == NAME


def _markers(blocks: Any) -> list[dict[str, Any]]:
    """The ``cache_control`` objects on a list of blocks (and inside tool results)."""
    if not isinstance(blocks, list):
        return []
    found: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, dict):
            if isinstance(b.get("cache_control"), dict):
                found.append(b["cache_control"])
            if b.get("type") == "tool_result":
                found += _markers(b.get("content"))
    return found


def _marked_segments(body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(segment index, cache_control)`` for each marker, in prompt order.

    Mirrors the layout of ``anthropic_render.render_request``: tools (if any),
    system (if any), then a header and a body segment per message.
    """
    found: list[tuple[int, dict[str, Any]]] = []
    i = 0
    for field in ("tools", "system"):
        if body.get(field):
            found += [(i, m) for m in _markers(body[field])]
            i += 1
    messages = body.get("messages")
    last_body = None
    for msg in messages if isinstance(messages, list) else []:
        last_body = i + 1
        found += [(last_body, m) for m in _markers(msg.get("content") if isinstance(msg, dict) else None)]
        i += 2
    top = body.get("cache_control")
    if isinstance(top, dict) and last_body is not None:  # automatic caching: the end of the prompt
        found.append((last_body, top))
    return found


def breakpoints(obj: dict[str, Any]) -> list[int]:
    """Indices of the segments (as :func:`parse` renders them) that end at a
    ``cache_control`` marker, sorted and unique; a body or a batch line.

    Example: tools, system (marked), one user message (marked)::

        [0 tools][1 system*][2 <|user|>][3 body*][4 <|assistant|>]  ->  [1, 3]
    """
    env = bodies.unwrap(obj, "-", 0)
    return sorted({i for i, _ in _marked_segments(env.body)})


def _ttl(body: dict[str, Any], usage: Any) -> str | None:
    split = usage.get("cache_creation") if isinstance(usage, dict) else None
    if isinstance(split, dict):
        for ttl in ("1h", "5m"):
            n = split.get(f"ephemeral_{ttl}_input_tokens")
            if type(n) is int and n > 0:
                return ttl
    marks = _marked_segments(body)
    if not marks:
        return None
    ttl = marks[-1][1].get("ttl", "5m")
    return ttl if isinstance(ttl, str) else "5m"


def anthropic_usage(usage: Any, f: FieldReader) -> BilledUsage | None:
    """Billed prompt, read and written tokens from Messages usage (``None`` when absent).

    Raises:
        TraceError: ``input_tokens`` is missing, or a count is not a non-negative integer.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise f.fail("expected 'usage' to be an object")
    u = FieldReader(usage, f.path, f.line)
    uncached = u.count_or_none("input_tokens")
    if uncached is None:
        raise f.fail("expected 'usage.input_tokens' (Anthropic usage)")
    read = u.count_or_none("cache_read_input_tokens") or 0
    write = u.count_or_none("cache_creation_input_tokens") or 0
    return BilledUsage(prompt_tokens=uncached + read + write, cached_tokens=read, cache_write_tokens=write)


def parse(obj: dict[str, Any], path: str, line: int) -> TraceRecord:
    """One Messages body (or Message Batches line) as a record.

    Raises:
        TraceError: ``path:line`` and what was expected.
    """
    env = bodies.unwrap(obj, path, line)
    f = FieldReader(env.body, path, line)
    if env.url is not None:
        raise f.fail(f"an OpenAI Batch line for {env.url!r}; read it with --input-format openai-chat or openai-responses")
    if not isinstance(env.body.get("messages"), list):
        raise f.fail("expected a 'messages' list (an Anthropic Messages body)")
    try:
        segments = ar.render_request(env.body.get("tools"), env.body.get("system"), env.body["messages"])
    except RenderError as e:
        raise f.fail(str(e)) from None
    resp = bodies.recorded_response(obj, env.body)
    usage = bodies.recorded_usage(obj, env.body, resp)
    reply = None
    if resp.get("content") is not None:
        try:
            reply = ar.message_body(resp["content"])
        except RenderError as e:
            raise f.fail(f"response.content: {e}") from None
    n_markers = len(_marked_segments(env.body))
    if n_markers > MAX_BREAKPOINTS:
        raise f.fail(f"{n_markers} cache_control markers; the API rejects more than {MAX_BREAKPOINTS}")
    marks = breakpoints(obj)
    return TraceRecord(
        line=line,
        request_id=env.custom_id or FieldReader(resp, path, line).str_or_none("id") or f"line-{line}",
        session_id=bodies.metadata_str(env.body, "user_id"),
        model=f.str_or_none("model"),
        segments=list(segments),
        output_text=reply,
        output_length=FieldReader(usage, path, line).count_or_none("output_tokens") if isinstance(usage, dict) else None,
        billed=anthropic_usage(usage, f),
        cache_ttl=_ttl(env.body, usage),
        breakpoints=marks or None,
        tools=tool_list(env.body.get("tools")),
        params=cache_params(env.body),
    )


def _result_usage(obj: dict[str, Any], f: FieldReader) -> BilledUsage | None:
    result = obj.get("result")
    if not isinstance(result, dict) or result.get("type") != "succeeded":
        return None  # errored, canceled and expired requests bill nothing
    message = result.get("message")
    if not isinstance(message, dict) or message.get("usage") is None:
        raise f.fail("expected 'result.message.usage' on a succeeded Message Batches result")
    return anthropic_usage(message["usage"], f)


def load_batch_results(path: str) -> dict[str, BilledUsage]:
    """``custom_id -> BilledUsage`` from a Message Batches results JSONL.

    Lines are ``{"custom_id", "result": {"type": "succeeded", "message":
    {"usage": {...}}}}``; other result types billed nothing and are left out.

    Raises:
        TraceError: ``path:line`` for a malformed line (see :func:`bodies.load_usage_file`).
    """
    return bodies.load_usage_file(path, _result_usage)
