"""Where the cached prefix lives in a request body, and positions inside its strings.

The prefix of a request is, in every provider's hash order, the tools, the
system prompt and the conversation. :func:`prefix_strings` yields the string
values of the first two (the system part in each API's spelling) so the KV1xx
rules can scan them; user and assistant messages are conversation, appended
once and re-sent verbatim, so a time someone typed there is not a breaker.

System spellings understood:

* Anthropic Messages and kvcache's native records: ``system`` (a string or a
  list of ``{"type": "text", "text": ...}`` blocks);
* OpenAI Chat: leading ``messages`` with role ``system`` or ``developer``;
* OpenAI Responses: ``instructions`` and leading ``input`` items with those roles;
* Gemini: ``system_instruction`` / ``systemInstruction`` ``parts[].text``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kvcache.analyzers.lint.document import LintDocument

Path = tuple[str | int, ...]
Finder = Callable[[str], Iterable[tuple[int, int, str]]]


@dataclass(slots=True, frozen=True)
class BodyString:
    """One string value of the prefix: where it is and which part it belongs to."""

    path: Path
    value: str
    part: str  # "the system prompt" or "the tools"


def system_strings(body: Any) -> Iterator[BodyString]:
    """String values of the system part of a body (see the module docstring)."""
    if not isinstance(body, dict):
        return
    part = "the system prompt"
    for key in ("system", "instructions"):
        yield from _texts(body.get(key), (key,), part)
    for key in ("system_instruction", "systemInstruction"):
        si = body.get(key)
        if isinstance(si, dict):
            yield from _texts(si.get("parts"), (key, "parts"), part)
    for key in ("messages", "input"):
        msgs = body.get(key)
        if not isinstance(msgs, list):
            continue
        for i, msg in enumerate(msgs):
            if not (isinstance(msg, dict) and msg.get("role") in ("system", "developer")):
                break
            yield from _texts(msg.get("content"), (key, i, "content"), f"the {msg['role']} message")


def tool_strings(body: Any) -> Iterator[BodyString]:
    """Every string value under ``tools`` (names, descriptions, schema text, enums)."""
    if isinstance(body, dict) and isinstance(body.get("tools"), list):
        yield from _walk(body["tools"], ("tools",))


def prefix_strings(body: Any) -> Iterator[BodyString]:
    """The system strings, then the tool strings."""
    yield from system_strings(body)
    yield from tool_strings(body)


def _texts(value: Any, path: Path, part: str) -> Iterator[BodyString]:
    if isinstance(value, str):
        yield BodyString(path, value, part)
    elif isinstance(value, list):
        for i, block in enumerate(value):
            if isinstance(block, str):
                yield BodyString((*path, i), block, part)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                yield BodyString((*path, i, "text"), block["text"], part)


def _walk(value: Any, path: Path) -> Iterator[BodyString]:
    if isinstance(value, str):
        yield BodyString(path, value, "the tools")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def scan_prefix(doc: LintDocument, finder: Finder, strings: Iterable[BodyString] | None = None
                ) -> Iterator[tuple[int, int, str, BodyString]]:
    """Run ``finder`` over each prefix string; spans come back as offsets in the file.

    Yields ``(start, end, what, string)``; ``what`` is the finder's description.
    """
    for bs in prefix_strings(doc.body) if strings is None else strings:
        span = doc.span_of(*bs.path)
        if span is None:
            continue
        offsets: list[int] | None = None
        for s, e, what in finder(bs.value):
            if offsets is None:
                offsets = raw_offsets(doc.text, span[0], len(bs.value))
            yield offsets[s], offsets[e], what, bs


def raw_offsets(text: str, start: int, n: int) -> list[int]:
    """File offset of each of the ``n`` decoded characters of the JSON string at ``start``, plus its end.

    ``start`` is the offset of the opening quote. Escapes (``\\n``, ``\\"``,
    ``\\u00e9``, surrogate pairs) take several file characters for one decoded one.
    """
    k = start + 1
    if "\\" not in text[k : k + n + 1]:
        return list(range(k, k + n + 1))
    out = []
    for _ in range(n):
        out.append(k)
        if text[k] != "\\":
            k += 1
        elif text[k + 1] != "u":
            k += 2
        elif 0xD800 <= int(text[k + 2 : k + 6], 16) < 0xDC00 and text[k + 6 : k + 8] == "\\u":
            k += 12
        else:
            k += 6
    out.append(k)
    return out


def tool_name(tool: Any) -> str:
    """A tool definition's name in any provider's shape (``""`` when it has none)."""
    if not isinstance(tool, dict):
        return ""
    fn = tool.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return fn["name"]
    name = tool.get("name")
    return name if isinstance(name, str) else str(tool.get("type") or "")
