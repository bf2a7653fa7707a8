"""KV404: the cacheable prefix is shorter than the model's minimum."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, block_tokens, markers, tokens
from kvcache.analyzers.lint.provider_body import body_provider, openai_prompt_text, provider_rules
from kvcache.analyzers.lint.rule import LintContext, Rule, register

# cl100k counts somewhat fewer tokens than Claude's tokenizer for the same text;
# within this fraction of the minimum the estimate cannot tell, so the rule stays silent.
_SLACK = 0.9


@register
class PrefixBelowMinimum(Rule):
    """A cache breakpoint on a prefix too short to be cached.

    What it does:
    Estimates the tokens of the prefix a request asks the provider to cache
    and compares them with the model's minimum (``min_prefix_tokens`` in
    ``engine/data/providers.json``: 1024 to 4096 for Claude models, 1024
    for OpenAI).

    - Anthropic (``--provider anthropic``, or a body of Anthropic's shape):
      the prefix up to the last ``cache_control`` marker, when that marker
      is on a fixed part of the prompt (tools, system, or a message before
      the latest user turn). Markers on the latest turn and top-level
      automatic caching follow a growing conversation, so they are not
      reported.
    - OpenAI (``--provider openai``, or a Chat/Responses body): the whole
      prompt of a body that asks for extended retention
      (``prompt_cache_retention``), info: caching is automatic, the retention
      just has no effect. A ``prompt_cache_key`` alone is not reported:
      clients rightly send one on every request of a conversation, short
      first turns included.

    Tokens are counted with cl100k_base, an approximation of the provider's
    tokenizer; prefixes within 10% of the minimum, or holding images or
    PDFs, are not reported.

    Why is this bad?
    Below the minimum the provider caches nothing and says nothing: no
    error, ``cache_creation_input_tokens`` stays 0, and every request pays
    the full input price for a prefix the developer believes is cached.

    Example:
    A short system prompt marked for caching on Claude Opus 4.6 (minimum
    4096 tokens)::

        {"model": "claude-opus-4-6", "max_tokens": 1024,
         "system": [{"type": "text", "text": "You are a terse assistant.",
                     "cache_control": {"type": "ephemeral"}}],
         "messages": [{"role": "user", "content": "Hi"}]}

    Use instead:
    Move the marker to a later block so that the cached prefix reaches the
    minimum (for instance the last turn of the conversation, or a block
    after the large reference documents), or drop the marker.

        {"model": "claude-opus-4-6", "max_tokens": 1024,
         "system": [{"type": "text", "text": "You are a terse assistant."}],
         "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<long document> ...", "cache_control": {"type": "ephemeral"}}]}]}

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://developers.openai.com/api/docs/guides/prompt-caching
    - https://github.com/anthropics/anthropic-sdk-python/issues/1194
    - https://github.com/vercel/ai/issues/4335
    """

    code = "KV404"
    name = "prefix-below-minimum"
    severity = "warning"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        provider = body_provider(doc, ctx)
        rules = provider_rules(provider, doc.model)
        if rules is None or not isinstance(doc.body, dict):
            return
        if provider == "anthropic":
            yield from self._anthropic(doc, rules.min_prefix_tokens)
        elif provider == "openai":
            yield from self._openai(doc, rules.min_prefix_tokens)

    def _anthropic(self, doc: LintDocument, minimum: int) -> Iterator[Diagnostic]:
        blocks = anthropic_blocks(doc.body)
        found = markers(doc.body, blocks)
        if not found or any(m.top_level for m in found):
            return  # no caching asked for, or automatic caching on the growing end
        last = found[-1]
        users = [b.message for b in blocks if b.message is not None and _role(doc.body, b.message) == "user"]
        if last.path[0] == "messages" and users and last.path[1] >= users[-1]:
            return  # the latest turn: a conversation that grows into the minimum
        prefix = block_tokens(blocks[: last.block + 1])
        span = doc.span_of(*last.path, "cache_control")
        if prefix is None or span is None or prefix >= minimum * _SLACK:
            return
        yield self.diagnostic(
            doc, *span,
            f"the prefix up to this breakpoint is about {prefix} tokens (cl100k approximation), below "
            f"{doc.model or 'the model'}'s minimum of {minimum}: Anthropic silently caches nothing here",
            tokens_at_risk=prefix,
        )

    def _openai(self, doc: LintDocument, minimum: int) -> Iterator[Diagnostic]:
        key = "prompt_cache_retention" if doc.body.get("prompt_cache_retention") is not None else None
        span = doc.span_of(key) if key else None
        if span is None:
            return
        text, whole = openai_prompt_text(doc.body)
        prompt = tokens(text)
        if not whole or prompt >= minimum * _SLACK:
            return
        yield self.diagnostic(
            doc, *span,
            f"the whole prompt is about {prompt} tokens (cl100k approximation), below OpenAI's minimum of "
            f"{minimum}: nothing is cached, so {key} has no effect on this request",
            tokens_at_risk=prompt, severity="info",
        )


def _role(body: dict, i: int) -> str | None:
    msg = body["messages"][i]
    return msg.get("role") if isinstance(msg, dict) else None
