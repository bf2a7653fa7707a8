"""Anthropic Messages bodies as the provider hashes them: blocks and breakpoints.

Blocks are listed in the order Anthropic processes them (tools -> system ->
messages), whatever the key order of the JSON::

    tools[0] .. tools[T-1] | system[0] .. | messages[0].content[0] .. messages[M-1].content[-1]
    block 0                                                                       block N-1

A ``cache_control`` marker on a block is a breakpoint; a top-level one
(automatic caching) sits on the last block. Token counts use cl100k_base, an
approximation of Claude's tokenizer, loaded on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(slots=True, frozen=True)
class Block:
    """One content block in prompt order.

    Attributes:
        path: JSON path of the block (``("system", 0)``, ``("messages", 3, "content", 1)``).
        section: ``tools``, ``system`` or ``messages``.
        message: index of its message (``messages`` section only).
        text: what the block puts in the prompt, for token counts and patterns;
            ``None`` when its size cannot be estimated (images, PDFs).
    """

    path: tuple[str | int, ...]
    section: str
    message: int | None
    text: str | None


@dataclass(slots=True, frozen=True)
class Marker:
    """A ``cache_control`` breakpoint.

    ``path`` is the object holding ``cache_control`` (``()`` for automatic
    caching's top-level marker, which sits on the last block); ``block`` its
    index in :func:`anthropic_blocks`.
    """

    path: tuple[str | int, ...]
    block: int
    value: dict[str, Any]

    @property
    def top_level(self) -> bool:
        return self.path == ()

    @property
    def ttl(self) -> str:
        ttl = self.value.get("ttl")
        return ttl if isinstance(ttl, str) else "5m"


def anthropic_blocks(body: Any) -> list[Block]:
    """The content blocks of an Anthropic Messages body, in prompt order."""
    if not isinstance(body, dict):
        return []
    out: list[Block] = []
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        out.append(Block(("tools", i), "tools", None, prompt_json(tool)))
    system = body.get("system")
    if isinstance(system, str):
        out.append(Block(("system",), "system", None, system))
    elif isinstance(system, list):
        out.extend(Block(("system", i), "system", None, _block_text(b)) for i, b in enumerate(system))
    msgs = body.get("messages")
    for i, msg in enumerate(msgs if isinstance(msgs, list) else []):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            out.extend(Block(("messages", i, "content", j), "messages", i, _block_text(b))
                       for j, b in enumerate(content))
        elif content is not None:
            text = content if isinstance(content, str) else None
            out.append(Block(("messages", i, "content"), "messages", i, text))
    return out


def markers(body: Any, blocks: list[Block]) -> list[Marker]:
    """Every ``cache_control`` breakpoint, in prompt order (the top-level one last)."""
    out: list[Marker] = []
    for n, blk in enumerate(blocks):
        value = _get(body, blk.path)
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("cache_control"), dict):
            out.append(Marker(blk.path, n, value["cache_control"]))
        inner = value.get("content") if value.get("type") == "tool_result" else None
        for k, sub in enumerate(inner if isinstance(inner, list) else []):
            if isinstance(sub, dict) and isinstance(sub.get("cache_control"), dict):
                out.append(Marker((*blk.path, "content", k), n, sub["cache_control"]))
    if isinstance(body, dict) and isinstance(body.get("cache_control"), dict) and blocks:
        out.append(Marker((), len(blocks) - 1, body["cache_control"]))
    return out


def tokens(text: str) -> int:
    """cl100k_base tokens in ``text`` (an approximation of any provider's count)."""
    return len(_encoder()(text)) if text else 0


def block_tokens(blocks: list[Block]) -> int | None:
    """Total tokens of ``blocks``, or ``None`` when one of them cannot be estimated."""
    if any(b.text is None for b in blocks):
        return None
    return sum(tokens(b.text or "") for b in blocks)


@lru_cache(maxsize=1)
def _encoder() -> Any:
    from kvcache.engine.traces.tokenizer import load_encoder

    return load_encoder("cl100k_base")


def prompt_json(value: Any) -> str:
    """A tool or block as JSON text, without its ``cache_control`` marker."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache_control"}
    return json.dumps(value, ensure_ascii=False)


def _block_text(block: Any) -> str | None:
    """What one content block puts in the prompt; ``None`` for images and binary documents."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    if kind == "text":
        return block.get("text") if isinstance(block.get("text"), str) else None
    if kind in ("thinking", "redacted_thinking"):
        return block.get("thinking") if isinstance(block.get("thinking"), str) else None
    if kind == "tool_use":
        return f"{block.get('name', '')} {prompt_json(block.get('input', {}))}"
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            texts = [_block_text(b) for b in content]
            return None if any(t is None for t in texts) else "\n".join(t or "" for t in texts)
        return content if isinstance(content, str) else None
    source = block.get("source")
    if isinstance(source, dict):  # image or document: text documents only
        return source.get("data") if source.get("type") == "text" and isinstance(source.get("data"), str) else None
    return prompt_json(block)


def _get(body: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        try:
            body = body[key]
        except (KeyError, IndexError, TypeError):
            return None
    return body
