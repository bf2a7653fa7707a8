"""KV503: the gap between two turns is longer than the provider's cache TTL."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class TTLGap(Rule):
    """A session resumes after its cached prefix has expired.

    What it does:
    With ``--provider``, reports a request that arrives longer after the
    previous request of its session than the provider keeps cache entries:
    Anthropic 5 minutes (1 hour for calls whose log shows 1-hour writes),
    OpenAI 5–10 minutes idle (600 s is assumed; 30 minutes from GPT-5.6),
    Gemini a few minutes (``engine/data/providers.json``). A local vLLM
    never expires entries, so without ``--provider`` the rule is silent.

    Why is this bad?
    After the TTL the whole conversation is prefilled and written to the
    cache again, at the write price (1.25x the input price on Anthropic)
    instead of the read price (0.1x). Long tool runs, human approval steps
    and background agents that poll slowly hit this on every turn.

    Example:
    Turn 4 arrives 7 minutes after turn 3 on Anthropic with the default
    5-minute TTL, because a test suite ran in between.

    Use instead:
    Use the 1-hour TTL (``"cache_control": {"type": "ephemeral", "ttl": "1h"}``)
    for sessions with long pauses, or keep the cache warm with a cheap
    request before the TTL runs out when the pause is expected.

        {"type": "text", "text": system, "cache_control": {"type": "ephemeral", "ttl": "1h"}}

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://developers.openai.com/api/docs/guides/prompt-caching
    """

    code = "KV503"
    name = "ttl-gap"
    severity = "info"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.TTL_GAP)) is not None:
            yield pair_diagnostic(self, pair, kind, "cache expired", ctx)
