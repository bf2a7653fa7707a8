"""Render OpenAI Responses-API prompts (instructions + input items) as segments.

The layout follows the order in which OpenAI's models see a Responses request
(the harmony format: system message, developer message with the instructions
and then the tools, then the conversation), written with kvcache's template
conventions from ``render.py`` (one header segment and one body segment ending
in ``END`` per message)::

    <|system|>\\nReasoning: {effort}<|end|>\\n          (when the effort is known)
    <|developer|>\\n   {instructions}<|end|>\\n        (header, body)
    <|tools|>\\n       {tools}\\n<|end|>\\n            (header, body; JSON or token ids)
    <|{role}|>\\n      {item body}<|end|>\\n           (per input item, see below)
    <|assistant|>\\n                                   (generation prompt)

Item bodies (the model never sees ``call_id``; it is left out)::

    message                  <|{role}|>    {text parts}<|end|>
    reasoning                <|assistant|> {reasoning tokens}<|end|>
    function_call            <|assistant|> <|tool_call|>{name}\\n{arguments}\\n<|end|>
    custom_tool_call         <|assistant|> <|tool_call|>{name}\\n{input}\\n<|end|>
    web_search_call          <|assistant|> <|web_search|>{action JSON}\\n<|end|>
    local_shell_call         <|assistant|> <|local_shell|>{action JSON}\\n<|end|>
    *_output                 <|tool|>      {output}<|end|>

Every model-generated item starts with the generation prompt's header, so a
call's reply is the next call's history minus that first header: see
:func:`render_reply_items`. Text is turned into segments by a caller-supplied
function, so a log that redacts spans can put token-id tuples (pseudo tokens)
where the text was; a body that mixes text and token ids becomes several
segments whose last one ends in ``END``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from kvcache.engine.traces.records import Segment
from kvcache.engine.traces.render import END, GENERATION_PROMPT, RenderError

TextSegments = Callable[[str], list[Segment]]
# Item types a model generates; each renders with the assistant header.
MODEL_ITEM_TYPES = frozenset({"reasoning", "function_call", "custom_tool_call", "web_search_call", "local_shell_call"})
OUTPUT_ITEM_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})


def plain_text(text: str) -> list[Segment]:
    """Text as one segment (no redaction)."""
    return [text] if text else []


def is_model_item(item: dict[str, Any]) -> bool:
    """Whether the model produced this item (so it belongs to a call's reply)."""
    kind = item.get("type")
    return kind in MODEL_ITEM_TYPES or (kind == "message" and item.get("role") == "assistant")


def body(pieces: Iterable[Segment]) -> list[Segment]:
    """Join adjacent strings and end with ``END``: one segment per text run."""
    out: list[Segment] = []
    for piece in [*pieces, END]:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        elif piece:
            out.append(piece)
    return out


def render_prefix(
    instructions: str | None, tools: Segment | list[Any] | None, effort: str | None, text: TextSegments = plain_text
) -> list[Segment]:
    """The segments before the first input item: effort, instructions, tools.

    Args:
        instructions: the request's ``instructions`` text.
        tools: a list of tool definitions (JSON, order kept), or token ids for
            tools a log leaves out, or ``None``.
        effort: ``reasoning.effort`` (it sits in the system message, so a change
            invalidates everything after it).
        text: turns text into segments.

    Raises:
        RenderError: ``tools`` is neither a list nor token ids.
    """
    return [*effort_segments(effort), *instructions_segments(instructions, text), *tools_segments(tools)]


def effort_segments(effort: str | None) -> list[Segment]:
    """The system message that names the reasoning effort (none when unknown)."""
    return [f"<|system|>\nReasoning: {effort}{END}"] if effort else []


def instructions_segments(instructions: str | None, text: TextSegments = plain_text) -> list[Segment]:
    """The developer message holding the instructions (none when empty)."""
    return ["<|developer|>\n", *body(text(instructions))] if instructions else []


def tools_segments(tools: Segment | list[Any] | None) -> list[Segment]:
    """The tool definitions: JSON as given, or token ids standing in for them."""
    if not tools:
        return []
    if isinstance(tools, tuple):
        return ["<|tools|>\n", *body([tools, "\n"])]
    if not isinstance(tools, list):
        raise RenderError("expected 'tools' to be a list")
    return ["<|tools|>\n", *body([json.dumps(tools, ensure_ascii=False), "\n"])]


def render_item(item: dict[str, Any], text: TextSegments = plain_text, reasoning: Segment = "") -> list[Segment]:
    """Header and body segments of one input item.

    Args:
        item: a Responses input item.
        text: turns text (content, arguments, outputs) into segments.
        reasoning: what a reasoning item's body holds; reasoning is encrypted,
            so the caller decides (e.g. pseudo tokens of the billed length).

    Raises:
        RenderError: the item has a shape this template does not understand.
    """
    kind = item.get("type", "message")  # EasyInputMessage has no 'type'
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str):
            raise RenderError("a message item needs a string 'role'")
        return [f"<|{role}|>\n", *body(_content(item.get("content"), text))]
    if kind == "reasoning":
        return [GENERATION_PROMPT, *body([reasoning])]
    if kind in ("function_call", "custom_tool_call"):
        name = item.get("name")
        payload = item.get("arguments" if kind == "function_call" else "input", "")
        if not isinstance(name, str) or not isinstance(payload, str):
            raise RenderError(f"a {kind} item needs a string 'name' and a string payload")
        return [GENERATION_PROMPT, *body([f"<|tool_call|>{name}\n", *text(payload), "\n"])]
    if kind in ("web_search_call", "local_shell_call"):
        tag = kind.removesuffix("_call")
        action = json.dumps(item.get("action") or {}, ensure_ascii=False)
        return [GENERATION_PROMPT, *body([f"<|{tag}|>{action}\n"])]
    if kind in OUTPUT_ITEM_TYPES:
        return ["<|tool|>\n", *body(_content(item.get("output"), text))]
    raise RenderError(f"unsupported input item type {kind!r}")


def render_reply_items(rendered: list[list[Segment]]) -> list[Segment]:
    """A call's reply from its rendered output items (each from :func:`render_item`).

    The prompt already ends with the first item's header (the generation
    prompt), so it is dropped; the rest is exactly what the next call's history
    carries after the prompt.
    """
    out: list[Segment] = []
    for i, segs in enumerate(rendered):
        assert i > 0 or segs[0] == GENERATION_PROMPT, "reply items must start with the assistant header"
        out += segs[1:] if i == 0 else segs
    return out


def _content(content: Any, text: TextSegments) -> list[Segment]:
    """Segments of message content or a tool output: a string or a list of parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return text(content)
    if not isinstance(content, list):
        raise RenderError(f"expected content to be a string or a list of parts, got {type(content).__name__}")
    out: list[Segment] = []
    for part in content:
        if not isinstance(part, dict):
            raise RenderError("content parts must be objects with a 'type'")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "refusal"):
            value = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(value, str):
                raise RenderError(f"a {kind} part needs a string")
            out += text(value)
        elif kind in ("input_image", "image_url", "input_file"):
            out.append("<image>" if kind != "input_file" else "<file>")
        else:
            raise RenderError(f"unsupported content part type {kind!r}")
    return out
