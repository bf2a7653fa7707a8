"""OpenAI Chat Completions request bodies, one per line (and Batch input lines).

A line is a body ``{"model", "messages", "tools"?, ...}`` or a Batch input line
``{"custom_id", "method", "url": "/v1/chat/completions", "body": {...}}``. Which
files this reader takes is :mod:`bodies`' rule.

**Prompt.** OpenAI hashes a request as tools, then the messages in order (a
system or developer message where it stands), so the segments are those of
:func:`render.render_segments` with no separate system::

    <|tools|>\\n{tools as JSON}\\n<|end|>\\n      (``tools``, else legacy ``functions``)
    <|{role}|>\\n  {content}{tool calls}<|end|>\\n (per message; <|tool|>{id} for tool results)
    <|assistant|>\\n                               (generation prompt)

``input_audio`` and ``file`` parts render as ``<audio>``/``<file>`` placeholders,
``refusal`` parts as their text, a legacy ``function_call`` as a tool call.
Other parameters (``tool_choice``, ``response_format``...) are not rendered.

**Fields.**

* ``request_id``: the Batch ``custom_id``, else ``metadata.request_id``, else the
  recorded response's ``id``, else ``line-{n}``.
* ``session_id``: ``metadata.session_id``, else ``prompt_cache_key``, else
  ``user``, else ``safety_identifier``. ``prompt_cache_key`` is not a cache salt:
  OpenAI uses it to route requests, not to isolate them.
* ``org``: ``metadata.org``, else ``None``. ``arrival``: the recorded
  response's ``created`` (seconds), else ``None`` (the previous line's).
* **Recorded response** (optional): ``response`` on the line or in the body is
  a Chat Completion (or a Batch output's ``{"status_code", "body": {...}}``).
  Its ``choices[0].message`` becomes the reply, rendered as the next turn's
  assistant body so that turn can hit it; ``usage.completion_tokens`` the
  output length.
* **Billed usage**: the response's ``usage``, else a top-level ``usage``, read
  by :func:`bodies.openai_usage` (``prompt_tokens`` and
  ``prompt_tokens_details.cached_tokens``).

**Batch output.** :func:`load_batch_output` reads a Batch *output* file into
``custom_id -> BilledUsage``; :func:`bodies.attach_billed` sets it on records.
"""

from __future__ import annotations

from typing import Any

from kvcache.engine.traces import bodies
from kvcache.engine.traces.bodies import attach_billed
from kvcache.engine.traces.records import BilledUsage, FieldReader, TraceRecord, cache_params, tool_list
from kvcache.engine.traces.render import RenderError, render_reply, render_segments

NAME = bodies.CHAT
__all__ = ["NAME", "attach_billed", "load_batch_output", "looks_like", "parse"]

_PLACEHOLDER_PARTS = {"input_audio": "<audio>", "file": "<file>"}


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a file's first JSON object is a Chat Completions body or Batch line."""
    return bodies.flavour(obj) == NAME


def _part(part: Any) -> Any:
    """A content part in a shape ``render`` knows (placeholders for audio and files)."""
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind in _PLACEHOLDER_PARTS:
        return {"type": "text", "text": _PLACEHOLDER_PARTS[kind]}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal")}
    return part


def _message(msg: Any) -> Any:
    """A message with legacy and non-text shapes mapped onto ``render``'s."""
    if not isinstance(msg, dict):
        return msg
    out = dict(msg)
    if isinstance(out.get("content"), list):
        out["content"] = [_part(p) for p in out["content"]]
    if out.get("function_call") and not out.get("tool_calls"):
        out["tool_calls"] = [{"function": out.pop("function_call")}]
    if out.get("content") is None and isinstance(out.get("refusal"), str):
        out["content"] = out["refusal"]  # what the model said instead
    return out


def _reply(resp: dict[str, Any], f: FieldReader) -> str | None:
    """The recorded reply as the next turn's assistant body, or ``None``."""
    choices = resp.get("choices")
    if not choices:
        return None
    first = choices[0] if isinstance(choices, list) else None
    msg = first.get("message") if isinstance(first, dict) else None
    if not isinstance(msg, dict):
        raise f.fail("expected 'response.choices[0].message' to be an object")
    msg = _message(msg)
    text = msg.get("content")
    if text is not None and not isinstance(text, str):
        raise f.fail("expected 'response.choices[0].message.content' to be a string or null")
    try:
        return render_reply(text, msg.get("tool_calls"))
    except RenderError as e:
        raise f.fail(f"response.choices[0].message: {e}") from None


def parse(obj: dict[str, Any], path: str, line: int) -> TraceRecord:
    """One Chat Completions body (or Batch input line) as a record.

    Raises:
        TraceError: ``path:line`` and what was expected, for a line of another
            API or a malformed body.
    """
    env = bodies.unwrap(obj, path, line)
    f = FieldReader(env.body, path, line)
    if env.anthropic_batch:
        raise f.fail("an Anthropic Message Batches line; read it with --input-format anthropic-messages")
    if env.url is not None and bodies.endpoint(env.url) != NAME:
        raise f.fail(f"a Batch line for {env.url!r}, expected '/v1/chat/completions'")
    messages = env.body.get("messages")
    if not isinstance(messages, list):
        raise f.fail("expected a 'messages' list (an OpenAI Chat Completions body)")
    tools = env.body.get("tools") or env.body.get("functions")
    try:
        segments = render_segments(tools, None, [_message(m) for m in messages])
    except RenderError as e:
        raise f.fail(str(e)) from None
    resp = bodies.recorded_response(obj, env.body)
    usage = bodies.recorded_usage(obj, env.body, resp)
    billed = bodies.openai_usage(usage, f)
    r = FieldReader(resp, path, line)
    out_len = FieldReader(usage, path, line).count_or_none("completion_tokens") if isinstance(usage, dict) else None
    return TraceRecord(
        line=line,
        request_id=env.custom_id or bodies.metadata_str(env.body, "request_id") or r.str_or_none("id") or f"line-{line}",
        session_id=bodies.openai_session(f),
        org=bodies.metadata_str(env.body, "org"),
        arrival=r.number_or_none("created"),
        model=f.str_or_none("model"),
        segments=segments,
        output_text=_reply(resp, f),
        output_length=out_len,
        billed=billed,
        tools=tool_list(tools),
        params=cache_params(env.body),
    )


def _batch_line_usage(obj: dict[str, Any], f: FieldReader) -> BilledUsage | None:
    resp = obj.get("response")
    if obj.get("error") is not None or not isinstance(resp, dict) or resp.get("status_code") != 200:
        return None  # a failed request bills nothing
    body = resp.get("body")
    if not isinstance(body, dict) or body.get("usage") is None:
        raise f.fail("expected 'response.body.usage' on a successful Batch output line")
    return bodies.openai_usage(body["usage"], f)


def load_batch_output(path: str) -> dict[str, BilledUsage]:
    """``custom_id -> BilledUsage`` from an OpenAI Batch output JSONL.

    Lines are ``{"custom_id", "response": {"status_code", "body": {"usage"}},
    "error"}``; Chat and Responses usage are both read. Lines with an ``error``,
    no ``response`` or a status other than 200 billed nothing and are left out.

    Raises:
        TraceError: ``path:line`` for a malformed line (see :func:`bodies.load_usage_file`).
    """
    return bodies.load_usage_file(path, _batch_line_usage)
