"""What the request-body readers share: envelopes, the format rule, ids, usage.

Three line readers take one API request body per JSONL line: ``openai-chat``,
``openai-responses`` and ``anthropic-messages``. Any line may instead be a batch
*envelope* around a body::

    OpenAI Batch input         {"custom_id", "method", "url", "body": {...}}
    Anthropic Message Batches  {"custom_id", "params": {...}}

**Which reader takes a file** is decided on its first JSON object by
:func:`flavour`, in this order:

1. A line with one of kvcache's own keys (``request_id``, ``session_id``,
   ``org``, ``arrival``, ``output_text``, ...) is none of these: it is native.
2. An OpenAI envelope goes by its ``url`` (``.../chat/completions`` or
   ``.../responses``; other endpoints are none); an Anthropic one is Messages.
3. A bare body needs a string ``model``. ``input`` without ``messages`` is a
   Responses body.
4. ``messages`` bodies of Chat Completions and Messages can be identical
   (``{"model", "max_tokens", "messages": [{"role": "user", "content": "hi"}]}``
   is valid for both), so, first match wins:

   a. OpenAI structure, which Anthropic's API rejects: a ``system``,
      ``developer``, ``tool`` or ``function`` message; ``tool_calls``,
      ``tool_call_id`` or ``function_call`` on a message; an ``image_url``,
      ``input_audio`` or ``file`` part; a tool with a ``function`` key
      -> openai-chat. (Gateways such as OpenRouter send Claude requests in
      this shape, ``cache_control`` parts included: they are Chat bodies.)
   b. Anthropic structure: a top-level ``system``; a tool with
      ``input_schema``; a ``tool_use``, ``tool_result``, ``thinking``,
      ``redacted_thinking``, ``document`` or sourced ``image`` block
      -> anthropic-messages.
   c. Parameters: an Anthropic-only one (``stop_sequences``, ``top_k``,
      ``thinking``, ``cache_control`` anywhere...) or ``max_tokens`` (required
      by Anthropic, deprecated by OpenAI), with no OpenAI-only one
      (``max_completion_tokens``, ``n``, ``response_format``, ``seed``,
      ``user``, ``prompt_cache_key``...) -> anthropic-messages.
   d. Otherwise openai-chat.

   The model name is not used: gateways send any model in either shape. For a
   text-only body both readers render the same tokens; they differ in the
   usage shape they read. ``--input-format`` overrides the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kvcache.engine.errors import TraceError
from kvcache.engine.traces.io import iter_lines, parse_json_object
from kvcache.engine.traces.records import BilledUsage, FieldReader, TraceRecord

CHAT, RESPONSES, ANTHROPIC = "openai-chat", "openai-responses", "anthropic-messages"
# Keys only kvcache's own formats (native, token ids) have.
KVCACHE_KEYS = frozenset({
    "request_id", "session_id", "org", "arrival", "output_text", "output_tool_calls", "output_length", "lora",
    "prompt_token_ids", "output_token_ids", "hash_ids",
})
_OPENAI_ROLES = frozenset({"system", "developer", "tool", "function"})
_OPENAI_MESSAGE_KEYS = ("tool_calls", "tool_call_id", "function_call")
_OPENAI_PARTS = frozenset({"image_url", "input_audio", "file"})
_OPENAI_PARAMS = frozenset({
    "max_completion_tokens", "n", "response_format", "logprobs", "top_logprobs", "frequency_penalty",
    "presence_penalty", "seed", "stream_options", "prompt_cache_key", "prompt_cache_retention", "reasoning_effort",
    "functions", "function_call", "logit_bias", "parallel_tool_calls", "modalities", "audio", "prediction", "store",
    "user", "safety_identifier", "web_search_options", "verbosity",
})
_ANTHROPIC_BLOCKS = frozenset({
    "tool_use", "tool_result", "thinking", "redacted_thinking", "document", "server_tool_use", "search_result",
})
_ANTHROPIC_PARAMS = frozenset({"stop_sequences", "top_k", "thinking", "anthropic_version", "cache_control", "container", "mcp_servers"})


@dataclass(slots=True)
class Envelope:
    """A line split into its request body and the batch envelope around it, if any."""

    body: dict[str, Any]
    custom_id: str | None = None
    url: str | None = None  # OpenAI Batch only
    anthropic_batch: bool = False


def unwrap(obj: dict[str, Any], path: str, line: int) -> Envelope:
    """The body of a line, out of its batch envelope when it has one.

    Raises:
        TraceError: an envelope whose body or ``custom_id`` has the wrong type.
    """
    f = FieldReader(obj, path, line)
    if "params" in obj and "custom_id" in obj:
        if not isinstance(obj["params"], dict):
            raise f.fail("expected 'params' of a Message Batches line to be an object")
        return Envelope(obj["params"], f.str_or_none("custom_id"), anthropic_batch=True)
    if "body" in obj and "url" in obj:
        if not isinstance(obj["body"], dict) or not isinstance(obj["url"], str):
            raise f.fail("expected a Batch line's 'url' to be a string and its 'body' an object")
        return Envelope(obj["body"], f.str_or_none("custom_id"), obj["url"])
    return Envelope(obj)


def endpoint(url: str) -> str | None:
    """The reader for an OpenAI Batch ``url`` (``/v1/chat/completions``...), if any."""
    path = url.split("?", 1)[0].rstrip("/")
    return CHAT if path.endswith("/chat/completions") else RESPONSES if path.endswith("/responses") else None


def flavour(obj: dict[str, Any]) -> str | None:
    """Which request-body reader a line belongs to (the module docstring's rule)."""
    if KVCACHE_KEYS & obj.keys():
        return None
    if "custom_id" in obj and isinstance(obj.get("params"), dict):
        return ANTHROPIC if "messages" in obj["params"] else None
    if isinstance(obj.get("body"), dict) and isinstance(obj.get("url"), str):
        return endpoint(obj["url"])
    if not isinstance(obj.get("model"), str):
        return None
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return RESPONSES if "input" in obj and "messages" not in obj else None
    msgs = [m for m in messages if isinstance(m, dict)]
    parts = [p for m in msgs if isinstance(m.get("content"), list) for p in m["content"] if isinstance(p, dict)]
    raw_tools = obj.get("tools")
    tools = [t for t in raw_tools if isinstance(t, dict)] if isinstance(raw_tools, list) else []
    if (
        any(m.get("role") in _OPENAI_ROLES or any(k in m for k in _OPENAI_MESSAGE_KEYS) for m in msgs)
        or any(p.get("type") in _OPENAI_PARTS for p in parts)
        or any("function" in t for t in tools)
    ):
        return CHAT
    if (
        "system" in obj
        or any("input_schema" in t for t in tools)
        or any(p.get("type") in _ANTHROPIC_BLOCKS or (p.get("type") == "image" and "source" in p) for p in parts)
    ):
        return ANTHROPIC
    anthropic_only = bool(_ANTHROPIC_PARAMS & obj.keys()) or any("cache_control" in p for p in parts)
    if (anthropic_only or "max_tokens" in obj) and not _OPENAI_PARAMS & obj.keys():
        return ANTHROPIC
    return CHAT


def metadata_str(body: dict[str, Any], key: str) -> str | None:
    """A string (or integer) from the body's ``metadata`` object, if there is one."""
    meta = body.get("metadata")
    value = meta.get(key) if isinstance(meta, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None


def openai_session(f: FieldReader) -> str | None:
    """An OpenAI body's session: ``metadata.session_id``, else ``prompt_cache_key``,
    else ``user``, else ``safety_identifier`` (the first one present)."""
    return (
        metadata_str(f.obj, "session_id") or f.str_or_none("prompt_cache_key") or f.str_or_none("user")
        or f.str_or_none("safety_identifier")
    )


def recorded_response(obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The response a line records next to its body (``{}`` when none).

    ``response`` holds the API's response object, or a Batch output's
    ``{"status_code", "body": {...}}``, or a Message Batches result's
    ``{"type": "succeeded", "message": {...}}``; it may sit on the line or in the body.
    """
    resp = obj.get("response", body.get("response"))
    if not isinstance(resp, dict):
        return {}
    for key in ("body", "message"):  # unwrap batch-output and batch-result shapes
        if isinstance(resp.get(key), dict):
            return resp[key]
    return resp


def recorded_usage(obj: dict[str, Any], body: dict[str, Any], resp: dict[str, Any]) -> Any:
    """The usage a line records: the response's, else a top-level ``usage``."""
    for holder in (resp, obj, body):
        if holder.get("usage") is not None:
            return holder["usage"]
    return None


def openai_usage(usage: Any, f: FieldReader) -> BilledUsage | None:
    """Billed prompt and cached tokens from OpenAI usage (``None`` when absent).

    Accepted: Chat ``{prompt_tokens, prompt_tokens_details: {cached_tokens}}``,
    Responses ``{input_tokens, input_tokens_details: {cached_tokens}}``, and
    kvcache's ``{prompt_tokens, cached_tokens}``. Missing details count as 0
    cached tokens (responses from before prompt caching omit them);
    ``cache_write_tokens`` (GPT-5.6 and later) is read from either level.

    Raises:
        TraceError: the prompt count is missing, a count is not a non-negative
            integer, or more tokens are cached than the prompt holds.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise f.fail("expected 'usage' to be an object")
    u = FieldReader(usage, f.path, f.line)
    prefix = "input" if "input_tokens" in usage else "prompt"
    prompt = u.count_or_none(f"{prefix}_tokens")
    details = usage.get(f"{prefix}_tokens_details")
    if details is not None and not isinstance(details, dict):
        raise f.fail(f"expected 'usage.{prefix}_tokens_details' to be an object")
    d = FieldReader(details or {}, f.path, f.line)
    cached = d.count_or_none("cached_tokens")
    cached = u.count_or_none("cached_tokens") if cached is None else cached
    if prompt is None:
        raise f.fail("expected 'usage' to hold 'prompt_tokens' (Chat) or 'input_tokens' (Responses)")
    if (cached or 0) > prompt:
        raise f.fail(f"usage has {cached} cached tokens but only {prompt} prompt tokens")
    write = d.count_or_none("cache_write_tokens")
    return BilledUsage(prompt, cached or 0, u.count_or_none("cache_write_tokens") if write is None else write)


def load_usage_file(
    path: str, usage_of: Callable[[dict[str, Any], FieldReader], BilledUsage | None]
) -> dict[str, BilledUsage]:
    """``custom_id -> BilledUsage`` from a batch output/results JSONL.

    ``usage_of`` returns ``None`` for a line that billed nothing (a failed
    request): such lines are left out of the mapping.

    Raises:
        TraceError: ``path:line`` for a line that is not JSON, lacks a
            ``custom_id``, repeats one, or has malformed usage.
    """
    found: dict[str, BilledUsage] = {}
    first: dict[str, int] = {}
    for ln in iter_lines(path):
        obj = parse_json_object(ln, path)
        f = FieldReader(obj, path, ln.number)
        cid = f.str_or_none("custom_id")
        if cid is None:
            raise f.fail("expected a 'custom_id' on every batch output line")
        if cid in first:  # a batch never repeats an id: refuse rather than double-count
            raise f.fail(f"custom_id {cid!r} already appeared on line {first[cid]}")
        first[cid] = ln.number
        usage = usage_of(obj, f)
        if usage is not None:
            found[cid] = usage
    return found


def attach_billed(records: Iterable[TraceRecord], billed: Mapping[str, BilledUsage]) -> Iterator[TraceRecord]:
    """Records with ``billed`` set from a batch output mapping, by ``request_id``.

    A batch line's ``request_id`` is its ``custom_id``, so this pairs
    ``load_batch_output``/``load_batch_results`` with the input file. The
    mapping wins over usage a line recorded itself; records it does not name
    pass through unchanged.
    """
    for rec in records:
        usage = billed.get(rec.request_id)
        if usage is not None:
            rec.billed = usage
        yield rec
