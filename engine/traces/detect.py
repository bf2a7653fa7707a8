"""Trace format detection from the first line, and the registry of readers."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kvcache.engine.errors import TraceError
from kvcache.engine.traces import bailian, claude_code, codex, mooncake, native, openhands, sweagent, token_ids
from kvcache.engine.traces import anthropic_messages, openai_chat, openai_responses

# Order matters: the first reader whose `looks_like` accepts the line wins.
READERS: dict[str, ModuleType] = {
    claude_code.NAME: claude_code,
    codex.NAME: codex,
    openhands.NAME: openhands,
    sweagent.NAME: sweagent,
    bailian.NAME: bailian,
    mooncake.NAME: mooncake,
    token_ids.NAME: token_ids,
    # API request bodies: before native, which also has 'messages'; they refuse
    # lines with kvcache's own keys and split Chat from Messages (see bodies.py).
    openai_chat.NAME: openai_chat,
    openai_responses.NAME: openai_responses,
    anthropic_messages.NAME: anthropic_messages,
    native.NAME: native,
}
FORMATS: tuple[str, ...] = tuple(READERS)
# Formats whose lines are prefix-chained block ids, each with its own block size.
HASH_ID_FORMATS: dict[str, int] = {bailian.NAME: bailian.DEFAULT_BLOCK_SIZE, mooncake.NAME: mooncake.DEFAULT_BLOCK_SIZE}

_DESCRIPTIONS = {
    claude_code.NAME: "Claude Code transcript (~/.claude/projects/<project>/<session>.jsonl, or a folder of them)",
    codex.NAME: "Codex CLI rollout (~/.codex/sessions/**/rollout-*.jsonl, or a folder of them)",
    openhands.NAME: "OpenHands event trajectory (a .json list of events with 'action'/'observation')",
    sweagent.NAME: "SWE-agent trajectory (.traj with 'history' and 'trajectory')",
    bailian.NAME: "Bailian block-hash trace ('chat_id', 'parent_chat_id', 'hash_ids')",
    mooncake.NAME: "Mooncake block-hash trace ('hash_ids', 'input_length')",
    token_ids.NAME: "token-id trace ('prompt_token_ids')",
    openai_chat.NAME: "OpenAI Chat Completions request bodies ('model', 'messages'), or Batch input lines for /v1/chat/completions",
    openai_responses.NAME: "OpenAI Responses request bodies ('model', 'input'), or Batch input lines for /v1/responses",
    anthropic_messages.NAME: "Anthropic Messages request bodies ('model', 'max_tokens', 'messages'), or Message Batches lines ('custom_id', 'params')",
    native.NAME: "native kvcache JSONL ('messages', optional 'tools'/'system')",
}


def supported_formats() -> str:
    """One line listing the readable formats, for error messages."""
    return "; ".join(f"{k}: {v}" for k, v in _DESCRIPTIONS.items())


def line_parser(name: str):
    """The per-line parse function of a format (stateful readers get a fresh parser)."""
    reader = READERS[name]
    return reader.Parser() if hasattr(reader, "Parser") else reader.parse


def detect_format(obj: dict[str, Any], path: str, line: int) -> str:
    """Name of the format the first record is in.

    Raises:
        TraceError: no reader recognises the record.
    """
    for name, reader in READERS.items():
        if reader.looks_like(obj):
            return name
    keys = ", ".join(sorted(obj)[:8]) or "none"
    raise TraceError(
        path, line, f"unknown trace format (keys: {keys}); supported formats are {supported_formats()}"
    )
