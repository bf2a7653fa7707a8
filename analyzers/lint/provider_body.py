"""Which provider a request body is for, and that provider's caching facts.

Shared by the KV4xx rules (provider cache controls). A body's provider is
``--provider`` when given, else inferred from its shape:

* Anthropic Messages: a top-level ``system``, ``cache_control`` markers,
  ``anthropic_version`` (Bedrock/Vertex), ``tool_use``/``tool_result`` blocks;
* OpenAI: ``input``/``instructions``/``prompt_cache_key`` (Responses), or
  ``messages`` with a ``system``/``developer``/``tool`` role (Chat);
* then the model name (``claude-*``, ``gpt-*``, ``o3``), and last
  ``max_tokens`` + ``messages`` (required by Anthropic) as Anthropic.

Facts come from ``engine/data/providers.json``, imported on first use so
that ``kvcache lint`` starts fast.
"""

from __future__ import annotations

import re
from typing import Any

from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, markers, prompt_json, tokens

_OPENAI_KEYS = frozenset({"input", "instructions", "prompt_cache_key", "prompt_cache_retention",
                          "previous_response_id"})
_OPENAI_MODEL = re.compile(r"(gpt|chatgpt|codex|o\d)")
# String fields that are not prompt text (ids, enums, binary payloads).
_NOT_TEXT = frozenset({"type", "role", "id", "call_id", "status", "detail", "name"})
_MEDIA = frozenset({"image_url", "input_image", "input_file", "file", "input_audio", "image"})


def body_provider(doc: Any, ctx: Any) -> str | None:
    """``ctx.provider``, else the provider the body's shape (then model name) implies."""
    if ctx.provider or doc.provider:
        return ctx.provider or doc.provider
    body = doc.body
    if not isinstance(body, dict):
        return None
    if "system" in body or "anthropic_version" in body or markers(body, anthropic_blocks(body)):
        return "anthropic"
    if _OPENAI_KEYS & body.keys():
        return "openai"
    msgs = body.get("messages")
    msgs = [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
    if any(m.get("role") in ("system", "developer", "tool") or "tool_calls" in m for m in msgs):
        return "openai"
    parts = [b for m in msgs if isinstance(m.get("content"), list) for b in m["content"]]
    kinds = {b.get("type") for b in parts if isinstance(b, dict)}
    if kinds & {"tool_use", "tool_result", "thinking"}:
        return "anthropic"
    model = (doc.model or "").lower().rsplit("/", 1)[-1]
    if model.startswith("claude"):
        return "anthropic"
    if _OPENAI_MODEL.match(model):
        return "openai"
    return "anthropic" if msgs and "max_tokens" in body else None


def provider_rules(provider: str | None, model: str | None) -> Any:
    """:class:`~kvcache.engine.provider_cache.ProviderRules`, or ``None`` for an unknown provider."""
    from kvcache.engine.errors import ConfigError
    from kvcache.engine.provider_cache import ProviderRules

    if provider is None:
        return None
    try:
        return ProviderRules.load(provider, model)
    except ConfigError:
        return None


def provider_fact(provider: str | None, model: str | None, key: str) -> Any:
    """A field of ``providers.json`` for a model (model overrides applied), or ``None``.

    For facts :class:`ProviderRules` does not carry (``max_breakpoints``).
    """
    from kvcache.engine.provider_cache import PROVIDERS, _by_model, _facts

    if provider not in PROVIDERS:
        return None
    facts = _facts()[provider]
    overrides = facts.get("model_overrides", {})
    over = _by_model(overrides | {"default": None}, model)
    if over is not None:
        facts = {**facts, **(overrides[over["same_as"]] if "same_as" in over else over)}
    return facts.get(key)


def openai_prompt_text(body: Any) -> tuple[str, bool]:
    """The prompt text of an OpenAI Chat or Responses body (tools as JSON).

    Returns the text and whether it is the whole prompt: false when the
    prompt also holds images, audio or files, whose tokens cannot be
    estimated from the body (the text is then a lower bound).
    """
    parts: list[str] = []
    whole = True
    if isinstance(body, dict):
        for key in ("instructions", "input", "messages"):
            whole = _strings(body.get(key), parts) and whole
        if isinstance(body.get("tools"), list):
            parts.append(prompt_json(body["tools"]))
    return "\n".join(parts), whole


def _strings(value: Any, out: list[str]) -> bool:
    """Collect the prompt strings of ``value``; false if it holds a part that is not text."""
    if isinstance(value, str):
        out.append(value)
        return True
    if isinstance(value, dict):
        if value.get("type") in _MEDIA or "image_url" in value or "input_audio" in value:
            return False
        value = [v for k, v in value.items() if k not in _NOT_TEXT]
    if isinstance(value, list):
        return all([_strings(v, out) for v in value])  # a list: every part is collected
    return True
