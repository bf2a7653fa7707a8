"""What each segment of a rendered prompt is: prefix (tools, system) or which message.

Every trace reader renders prompts with the conventions of
``engine/traces/render.py``: a message is a header segment ``<|role|>...\\n``
followed by body segments, the last one ending in ``<|end|>\\n``; native and
Anthropic prompts put the tools and the system prompt in one segment each
(``<|tools|>\\n{json}\\n<|end|>\\n``), Responses and Codex prompts give them a
header (``<|developer|>\\n``, ``<|tools|>\\n``) like messages; a log that leaves
the prefix out starts with pseudo tokens (a tuple) before any header::

    [<|tools|>\\n[...]<|end|>] [<|system|>\\n...<|end|>] [<|user|>\\n] [fix it<|end|>] [<|assistant|>\\n]
     role tools                 role system              message 0 (user)            message 1 (assistant)

Roles ``tools``, ``system``, ``developer`` and ``prefix`` form the prefix that
requests of one org share; every other role is a message of the history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

END = "<|end|>\n"
GENERATION_PROMPT = "<|assistant|>\n"
PREFIX_ROLES = frozenset({"tools", "system", "developer", "prefix"})
EFFORT_PREFIX = "<|system|>\nReasoning: "  # responses_render.effort_segments
THINKING_MARKERS = ("<|thinking|>\n", "<|redacted_thinking|>\n")
_HEADER = re.compile(r"<\|([a-z_]+)\|>[^\n<]*\n")
# Tags that open a line inside a body, never a message.
_INLINE = frozenset({"end", "tool_call", "tool_result", "thinking", "redacted_thinking", "web_search", "local_shell"})
_STANDALONE = re.compile(r"<\|(tools|system)\|>\n")


@dataclass(slots=True)
class Layout:
    """Per segment: its role and the message it belongs to (``-1`` in the prefix).

    Attributes:
        roles: one role per segment (see the module docstring).
        message: message index per segment; ``-1`` for prefix segments.
        prefix_end: index of the first segment that is not prefix.
        reasoning: indices of segments that hold reasoning (thinking blocks, or
            an assistant item whose body is only pseudo tokens: encrypted
            reasoning as the Responses and Codex readers render it).
    """

    roles: list[str]
    message: list[int]
    prefix_end: int
    reasoning: set[int]

    def where(self, seg: int) -> str:
        """``the tools``, ``the system prompt`` or ``message N (role)`` for people."""
        if seg >= len(self.roles):
            return "the end of the prompt"
        role = self.roles[seg]
        if role == "tools":
            return "the tools"
        if role in ("system", "developer"):
            return "the system prompt"
        if role == "prefix":
            return "the prefix"
        return f"message {self.message[seg] + 1} ({role})"


def _header_role(seg: Any) -> str | None:
    m = _HEADER.fullmatch(seg) if type(seg) is str else None
    return m.group(1) if m and m.group(1) not in _INLINE else None


def is_header(seg: Any) -> bool:
    return _header_role(seg) is not None


def is_structural(seg: Any) -> bool:
    """A segment without content: a header, an ``<|end|>`` or an empty tuple."""
    return (type(seg) is str and (seg == END or is_header(seg) or not seg)) or (type(seg) is tuple and not seg)


def layout(segments: Sequence[Any]) -> Layout:
    """The :class:`Layout` of a prompt's segments."""
    roles: list[str] = []
    message: list[int] = []
    role, msg, prefix_end = "prefix", -1, None
    for seg in segments:
        if (head := _header_role(seg)) is not None:
            role = head
            if role not in PREFIX_ROLES:
                msg += 1
        elif type(seg) is str and (m := _STANDALONE.match(seg)) and prefix_end is None:
            role = m.group(1)
        if role not in PREFIX_ROLES and prefix_end is None:
            prefix_end = len(roles)
        roles.append(role)
        message.append(msg if role not in PREFIX_ROLES else -1)
    out = Layout(roles, message, len(roles) if prefix_end is None else prefix_end, set())
    out.reasoning = _reasoning(segments, out)
    return out


def _reasoning(segments: Sequence[Any], lay: Layout) -> set[int]:
    found = {i for i, s in enumerate(segments) if type(s) is str and any(m in s for m in THINKING_MARKERS)}
    for i, seg in enumerate(segments):  # assistant items whose body is [pseudo tokens, END]
        if seg == GENERATION_PROMPT and i + 2 < len(segments) and type(segments[i + 1]) is tuple \
                and segments[i + 2] == END and lay.roles[i] == "assistant":
            found.update((i, i + 1, i + 2))
    return found


def thinking_count(text: str) -> int:
    return sum(text.count(m) for m in THINKING_MARKERS)


def tool_names(tools: Sequence[Any]) -> list[str]:
    """Names of tool definitions in order (OpenAI, Anthropic, Responses shapes; a server tool's type)."""
    names = []
    for t in tools:
        if isinstance(t, dict):
            fn = t.get("function")
            name = t.get("name") or (fn.get("name") if isinstance(fn, dict) else None) or t.get("type")
            names.append(str(name))
        else:
            names.append(repr(t))
    return names


def tools_from_segment(seg: Any) -> list[Any] | None:
    """Tool definitions parsed back from a rendered tools segment, or ``None``."""
    import json

    if type(seg) is not str:
        return None
    text = seg.removeprefix("<|tools|>\n").removesuffix(END).strip()
    try:
        tools = json.loads(text)
    except ValueError:
        return None
    return tools if isinstance(tools, list) else None
