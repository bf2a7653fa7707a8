"""Anthropic Messages content in kvcache's template, in Anthropic's hash order.

Anthropic hashes a request as tools -> system -> messages. The segments follow
the conventions of :mod:`render` (one header and one body segment per message,
each body ending in ``END``; the prompt ends with the generation prompt, which
is the assistant header)::

    <|tools|>\\n{tools as JSON, keys and order as given}\\n<|end|>\\n    (if any tools)
    <|system|>\\n{system text}<|end|>\\n                                (if a system prompt)
    <|{role}|>\\n                                                       (per message: header)
    {blocks, concatenated}<|end|>\\n                                   (per message: body)
    <|assistant|>\\n                                                    (generation prompt)

Content is a string or a list of blocks. Each block renders as:

=====================  =====================================================
``text``               its ``text``
``thinking``           ``<|thinking|>\\n{thinking}\\n``: the text the log holds
                       (Claude 4 returns a summary of its thinking; the
                       ``signature`` is opaque and not rendered)
``redacted_thinking``  ``<|redacted_thinking|>\\n`` (its data is encrypted)
``tool_use``           ``<|tool_call|>{id} {name}\\n{input as JSON}\\n``, keys in
                       the order given, so a client that reorders them breaks
                       the cache here as it does on the provider
``tool_result``        ``<|tool_result|>{tool_use_id}\\n{content}\\n`` (``error``
                       after the id when ``is_error``); content is a string or
                       blocks, rendered by these same rules
``image``              ``<image>``, ``document``: ``<document>`` (fixed
                       placeholders: the provider's image and PDF tokens depend
                       on the model)
any other type         ``<|{type}|>\\n{the block as JSON}\\n`` (server tools,
                       search results...: a stand-in of about the right size)
=====================  =====================================================

``cache_control`` markers say where the provider may cache; they are not
content, so they are dropped before rendering (adding a marker must not move a
single token).
"""

from __future__ import annotations

import json
from typing import Any

from kvcache.engine.traces.render import END, GENERATION_PROMPT, RenderError

__all__ = [
    "GENERATION_PROMPT",
    "message_body",
    "message_header",
    "render_block",
    "render_content",
    "render_request",
    "render_system",
    "render_tools",
]

_PLACEHOLDERS = {"image": "<image>", "document": "<document>"}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _without_cache_control(obj: Any) -> Any:
    if isinstance(obj, dict) and "cache_control" in obj:
        return {k: v for k, v in obj.items() if k != "cache_control"}
    return obj


def _string(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise RenderError(f"a {block.get('type')} block needs a string '{key}'")
    return value


def render_block(block: Any) -> str:
    """One content block as text (see the module docstring for each type).

    Raises:
        RenderError: the block is not an object with a string ``type``, or a
            known type lacks a field it needs.
    """
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise RenderError("content blocks must be objects with a string 'type'")
    kind = block["type"]
    if kind == "text":
        return _string(block, "text")
    if kind == "thinking":
        return "<|thinking|>\n" + _string(block, "thinking") + "\n"
    if kind == "redacted_thinking":
        return "<|redacted_thinking|>\n"
    if kind == "tool_use":
        name = _string(block, "name")
        call_id = block.get("id") if isinstance(block.get("id"), str) else ""
        return f"<|tool_call|>{call_id} {name}\n{_json(block.get('input', {}))}\n"
    if kind == "tool_result":
        use_id = _string(block, "tool_use_id")
        flag = " error" if block.get("is_error") is True else ""
        return f"<|tool_result|>{use_id}{flag}\n{render_content(block.get('content'))}\n"
    if kind in _PLACEHOLDERS:
        return _PLACEHOLDERS[kind]
    return f"<|{kind}|>\n{_json(_without_cache_control(block))}\n"


def render_content(content: Any) -> str:
    """A message's (or a tool result's) content: a string, blocks, or nothing.

    Raises:
        RenderError: content of another type, or a malformed block.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(render_block(b) for b in content)
    raise RenderError(f"expected content to be a string or a list of blocks, got {type(content).__name__}")


def message_header(role: str) -> str:
    """The header segment of a message; for ``assistant`` it equals the generation prompt."""
    return f"<|{role}|>\n"


def message_body(content: Any) -> str:
    """The body segment of a message. A reply rendered this way is exactly what the
    next request carries for that assistant turn, so the next request can hit it.

    Raises:
        RenderError: see :func:`render_content`.
    """
    return render_content(content) + END


def render_tools(tools: Any) -> str:
    """The tools segment: the definitions as JSON, order and keys as given.

    Raises:
        RenderError: ``tools`` is not a list.
    """
    if not isinstance(tools, list):
        raise RenderError("expected 'tools' to be a list")
    return "<|tools|>\n" + _json([_without_cache_control(t) for t in tools]) + "\n" + END


def render_system(system: Any) -> str:
    """The system segment; ``system`` is a string or a list of text blocks.

    Raises:
        RenderError: see :func:`render_content`.
    """
    return "<|system|>\n" + render_content(system) + END


def render_request(tools: Any, system: Any, messages: Any) -> list[str]:
    """Segments of a Messages request body in hash order: tools, system, messages.

    Raises:
        RenderError: a field has an unexpected shape (the message index is named).
    """
    segments: list[str] = []
    if tools:
        segments.append(render_tools(tools))
    if system:
        segments.append(render_system(system))
    if not isinstance(messages, list):
        raise RenderError("expected 'messages' to be a list")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise RenderError(f"messages[{i}] needs a string 'role'")
        try:
            body = message_body(msg.get("content"))
        except RenderError as e:
            raise RenderError(f"messages[{i}]: {e}") from None
        segments += [message_header(msg["role"]), body]
    segments.append(GENERATION_PROMPT)
    return segments
