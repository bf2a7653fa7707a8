"""The one chat template kvcache uses to turn native records into text segments.

Hash order is tools -> system -> messages (Anthropic's order; OpenAI-style
templates put tools inside the system turn, which hashes the same way: a change
to the tools breaks everything after it). Every piece below is one *segment*,
tokenized on its own::

    <|tools|>\\n{tools as JSON, keys and list order as given}\\n<|end|>\\n   (if any tools)
    <|system|>\\n{system}<|end|>\\n                                          (if a system prompt)
    <|{role}|>\\n                                                             (per message: header)
    {content}{tool calls}<|end|>\\n                                          (per message: body)
    <|assistant|>\\n                                                          (generation prompt)

A reply the model generates is ``{output_text}{output_tool_calls}<|end|>\\n``,
exactly the body the next turn renders for that assistant message (when the
record gives the reply's tool calls), so a conversation's next turn hits the
blocks its previous reply filled during decode (vLLM caches decode blocks).

Tools and tool-call arguments are serialised with ``json.dumps`` *without*
sorting keys: the point is to see the cache break when a client reorders them.
Image parts render as a fixed ``<image>`` placeholder (an approximation: real
image tokens depend on the model).
"""

from __future__ import annotations

import json
from typing import Any

END = "<|end|>\n"
GENERATION_PROMPT = "<|assistant|>\n"


class RenderError(ValueError):
    """A message has a shape the template does not understand."""


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind in ("text", "input_text", "output_text"):
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise RenderError("a text content part needs a string 'text'")
                    parts.append(text)
                elif kind in ("image_url", "image", "input_image"):
                    parts.append("<image>")
                else:
                    raise RenderError(f"unsupported content part type {kind!r}")
            else:
                raise RenderError("content parts must be objects with a 'type'")
        return "".join(parts)
    raise RenderError(f"expected content to be a string or a list of parts, got {type(content).__name__}")


def _tool_calls_text(tool_calls: Any) -> str:
    if not tool_calls:
        return ""
    if not isinstance(tool_calls, list):
        raise RenderError("expected 'tool_calls' to be a list")
    out: list[str] = []
    for call in tool_calls:
        if not isinstance(call, dict):
            raise RenderError("each tool call must be an object")
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise RenderError("a tool call's 'function' must be an object with 'name' and 'arguments'")
        name = fn.get("name", "")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        out.append(f"<|tool_call|>{call.get('id', '')} {name}\n{args}\n")
    return "".join(out)


def render_reply(output_text: str | None, tool_calls: Any = None) -> str:
    """The text a model generates for a reply: the next turn's assistant body.

    Raises:
        RenderError: ``tool_calls`` has an unexpected shape.
    """
    return (output_text or "") + _tool_calls_text(tool_calls) + END


def render_segments(tools: Any, system: Any, messages: Any) -> list[str]:
    """Render a native record's prompt into template segments.

    Raises:
        RenderError: a field has an unexpected shape.
    """
    segments: list[str] = []
    if tools:
        if not isinstance(tools, list):
            raise RenderError("expected 'tools' to be a list")
        segments.append("<|tools|>\n" + json.dumps(tools, ensure_ascii=False) + "\n" + END)
    if system:
        segments.append("<|system|>\n" + _content_text(system) + END)
    if not isinstance(messages, list):
        raise RenderError("expected 'messages' to be a list")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise RenderError(f"messages[{i}] needs a string 'role'")
        role = msg["role"]
        header = f"<|{role}|>\n"
        if role == "tool" and msg.get("tool_call_id"):
            header = f"<|tool|>{msg['tool_call_id']}\n"
        try:
            body = _content_text(msg.get("content")) + _tool_calls_text(msg.get("tool_calls")) + END
        except RenderError as e:
            raise RenderError(f"messages[{i}]: {e}") from None
        segments.append(header)
        segments.append(body)
    segments.append(GENERATION_PROMPT)
    return segments
