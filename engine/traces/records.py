"""The format-neutral record every trace reader produces, and field checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kvcache.engine.errors import TraceError

MAX_TOKEN_ID = 2**32 - 1  # token ids are hashed as uint32


@dataclass(slots=True, frozen=True)
class BilledUsage:
    """What the provider billed for one call's prompt, in the provider's tokens.

    Attributes:
        prompt_tokens: the whole prompt, cached part included (for Anthropic that
            is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``).
        cached_tokens: prompt tokens read from the cache.
        cache_write_tokens: prompt tokens written to the cache, when reported.
    """

    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int | None = None


@dataclass(slots=True)
class SkippedLine:
    """A line (of ``path``, when a trace spans files) that was not turned into a request."""

    line: int
    reason: str
    path: str | None = None


@dataclass(slots=True)
class ReaderOptions:
    """Options for readers of whole-file log formats (Claude Code, Codex).

    Attributes:
        assume_prefix_tokens: tokens of prompt prefix the log does not contain
            (Claude Code omits the system prompt and tools). ``None`` lets the
            reader infer it, e.g. from the first call's billed cache read + write.
    """

    assume_prefix_tokens: int | None = None


# A prompt segment: text to tokenize, or token ids used as they are (pseudo
# tokens for content a log redacts or leaves out, see tokenizer.pseudo_tokens).
Segment = str | tuple[int, ...]


@dataclass(slots=True)
class TraceRecord:
    """One request as read from a trace, before tokenizing and hashing.

    Exactly one of ``segments``, ``prompt_token_ids`` or ``hash_ids`` is set:

    * ``segments``: rendered prompt text, one string per template segment; each
      segment is tokenized on its own (and memoised). A segment may instead be a
      tuple of token ids, used as is.
    * ``prompt_token_ids``: the prompt as token ids.
    * ``hash_ids``: prefix-chained block ids at the trace's own block size.

    ``output_text`` is the reply exactly as the model generated it, already
    rendered (text, tool calls and end marker), ready to tokenize;
    ``output_segments`` gives it as segments instead, when it holds pseudo tokens.
    ``billed`` is the provider's usage for the call, when the log records it.
    ``path`` names the file the record came from when a trace spans files.
    ``cache_ttl`` is the provider TTL the call's cache writes used, when the log
    says (Claude Code's usage splits writes into ``ephemeral_5m``/``ephemeral_1h``).
    ``breakpoints`` lists the segments whose end carries a cache breakpoint
    (Anthropic's ``cache_control``); ``None`` means automatic caching.
    ``tools`` is the request's tool definitions as given (``None`` when the
    format does not carry them); ``params`` the request parameters that key the
    provider's cache besides the prompt (see :func:`cache_params`). Both are
    read by ``kvcache lint`` to name what changed between two requests.
    """

    line: int
    request_id: str
    session_id: str | None = None
    org: str | None = None
    arrival: float | None = None
    model: str | None = None
    segments: list[Segment] | None = None
    prompt_token_ids: list[int] | None = None
    hash_ids: list[Any] | None = None
    input_length: int | None = None
    output_text: str | None = None
    output_segments: list[Segment] | None = None
    output_token_ids: list[int] | None = None
    output_length: int | None = None
    lora_name: str | None = None
    billed: BilledUsage | None = None
    path: str | None = None
    cache_ttl: str | None = None
    breakpoints: list[int] | None = None
    tools: list[Any] | None = None
    params: dict[str, Any] | None = None


# Request parameters that invalidate (part of) a provider's cache when they
# change between turns, although they are not rendered into the prompt.
CACHE_PARAM_KEYS: tuple[str, ...] = (
    "thinking", "reasoning", "reasoning_effort", "output_config", "speed", "tool_choice",
)


def cache_params(body: dict[str, Any]) -> dict[str, Any] | None:
    """The :data:`CACHE_PARAM_KEYS` a request body sets (as given), or ``None``."""
    found = {k: body[k] for k in CACHE_PARAM_KEYS if body.get(k) is not None}
    return found or None


def tool_list(tools: Any) -> list[Any] | None:
    """``tools`` when it is a non-empty list (what the renderers accept), else ``None``."""
    return tools if isinstance(tools, list) and tools else None


class FieldReader:
    """Typed access to a JSON object's fields that names the file and line on error."""

    def __init__(self, obj: dict[str, Any], path: str, line: int) -> None:
        self.obj = obj
        self.path = path
        self.line = line

    def fail(self, message: str) -> TraceError:
        return TraceError(self.path, self.line, message)

    def request_fields(self) -> dict[str, Any]:
        """The fields every request-shaped format shares (native, token ids)."""
        return {
            "line": self.line,
            "request_id": self.str_or_none("request_id") or f"line-{self.line}",
            "session_id": self.str_or_none("session_id"),
            "org": self.str_or_none("org"),
            "arrival": self.number_or_none("arrival"),
            "model": self.str_or_none("model"),
            "lora_name": self.str_or_none("lora"),
            "billed": self.billed_usage(),
        }

    def billed_usage(self) -> BilledUsage | None:
        """The optional ``usage`` object of kvcache's own formats:
        ``{"prompt_tokens": N, "cached_tokens": M}`` as the provider billed them."""
        usage = self.obj.get("usage")
        if usage is None:
            return None
        if not isinstance(usage, dict):
            raise self.fail("expected 'usage' to be an object with 'prompt_tokens' and 'cached_tokens'")
        inner = FieldReader(usage, self.path, self.line)
        prompt, cached = inner.count_or_none("prompt_tokens"), inner.count_or_none("cached_tokens")
        if prompt is None or cached is None or cached > prompt:
            raise self.fail("expected 'usage' to hold 'prompt_tokens' and 'cached_tokens' (cached <= prompt)")
        return BilledUsage(prompt, cached, inner.count_or_none("cache_write_tokens"))

    def str_or_none(self, key: str) -> str | None:
        """A string field; a missing field, null and "" all read as ``None``."""
        v = self.obj.get(key)
        if v is None or v == "":
            return None
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return str(v)
        raise self.fail(f"expected '{key}' to be a string, got {type(v).__name__}")

    def number_or_none(self, key: str) -> float | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(f"expected '{key}' to be a finite number, got {v!r}")
        return float(v)

    def count_or_none(self, key: str) -> int | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(f"expected '{key}' to be a non-negative integer, got {v!r}")
        return v

    def token_list(self, key: str, *, required: bool = True) -> list[int] | None:
        """A list of token ids, each in [0, 2**32)."""
        v = self.obj.get(key)
        if v is None:
            if required:
                raise self.fail(f"expected a '{key}' list of token ids")
            return None
        # set(map(type, ...)) and min/max run in C, which matters on long prompts.
        if not isinstance(v, list) or not set(map(type, v)) <= {int}:
            raise self.fail(f"expected '{key}' to be a list of integer token ids")
        if v and (min(v) < 0 or max(v) > MAX_TOKEN_ID):
            raise self.fail(f"expected '{key}' to hold token ids between 0 and {MAX_TOKEN_ID}")
        return v
