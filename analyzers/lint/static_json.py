"""JSON a request body carries inside its conversation: tool-call arguments and tool results (KV202).

:func:`json_uses` finds every JSON object the conversation re-sends: OpenAI
Chat ``tool_calls[].function.arguments`` and ``role: tool`` contents, Responses
``function_call`` arguments and ``function_call_output`` outputs, Anthropic
``tool_use.input`` objects and ``tool_result`` contents. Each is tagged with its
tool's name (results are matched to calls by id) so that objects of one tool can
be compared. :func:`key_orders` lists the key order of every object inside one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]


@dataclass(slots=True, frozen=True)
class JsonUse:
    """One JSON object in the conversation: where it is, whose it is, and its parsed value."""

    path: Path
    tool: str
    role: str  # "arguments" or "result"
    value: dict


def _obj(text: Any) -> dict | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def json_uses(body: Any) -> Iterator[JsonUse]:
    """Every JSON object in tool calls and tool results of a body, oldest first."""
    if not isinstance(body, dict):
        return
    names: dict[Any, str] = {}
    for key in ("messages", "input"):
        msgs = body.get(key)
        if isinstance(msgs, list):
            for i, msg in enumerate(msgs):
                if isinstance(msg, dict):
                    yield from _message(msg, (key, i), names)


def _message(msg: dict, path: Path, names: dict[Any, str]) -> Iterator[JsonUse]:
    calls = msg.get("tool_calls")
    for j, call in enumerate(calls if isinstance(calls, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            names[call.get("id")] = str(fn.get("name", ""))
            obj = _obj(fn.get("arguments"))
            if obj is not None:
                yield JsonUse((*path, "tool_calls", j, "function", "arguments"), names[call.get("id")], "arguments", obj)
    kind = msg.get("type")
    if kind == "function_call":
        names[msg.get("call_id")] = str(msg.get("name", ""))
        obj = _obj(msg.get("arguments"))
        if obj is not None:
            yield JsonUse((*path, "arguments"), names[msg.get("call_id")], "arguments", obj)
    elif kind == "function_call_output":
        obj = _obj(msg.get("output"))
        if obj is not None:
            yield JsonUse((*path, "output"), names.get(msg.get("call_id"), ""), "result", obj)
    content = msg.get("content")
    if msg.get("role") == "tool":
        tool = names.get(msg.get("tool_call_id"), str(msg.get("name", "")))
        yield from _texts(content, (*path, "content"), tool)
    elif isinstance(content, list):
        for k, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use" and isinstance(block.get("input"), dict):
                names[block.get("id")] = str(block.get("name", ""))
                yield JsonUse((*path, "content", k, "input"), names[block.get("id")], "arguments", block["input"])
            elif block.get("type") == "tool_result":
                yield from _texts(block.get("content"), (*path, "content", k, "content"),
                                  names.get(block.get("tool_use_id"), ""))


def _texts(content: Any, path: Path, tool: str) -> Iterator[JsonUse]:
    if isinstance(content, str):
        obj = _obj(content)
        if obj is not None:
            yield JsonUse(path, tool, "result", obj)
    elif isinstance(content, list):
        for k, part in enumerate(content):
            if isinstance(part, dict):
                obj = _obj(part.get("text"))
                if obj is not None:
                    yield JsonUse((*path, k, "text"), tool, "result", obj)


def key_orders(value: Any, sub: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``(where, keys)`` for every object inside ``value``; ``where`` names it by keys, ``[]`` for list items."""
    if isinstance(value, dict):
        yield sub, tuple(value)
        for k, v in value.items():
            yield from key_orders(v, (*sub, k))
    elif isinstance(value, list):
        for v in value:
            yield from key_orders(v, (*sub, "[]"))


def reordered(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two key orders put at least two shared keys in a different order."""
    common = set(a) & set(b)
    return len(common) >= 2 and [k for k in a if k in common] != [k for k in b if k in common]
