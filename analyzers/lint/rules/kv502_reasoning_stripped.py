"""KV502: thinking/reasoning blocks dropped from the replayed history."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class ReasoningStripped(Rule):
    """Thinking or reasoning blocks sent on one turn are missing from the next.

    What it does:
    Reports a request whose history lost thinking blocks (Anthropic
    ``thinking`` / ``redacted_thinking``) or reasoning items (OpenAI
    Responses, Codex) that the previous request of its session carried.

    Why is this bad?
    The reasoning sat in the cached prefix; removing it changes every token
    after it, so the rest of the conversation is prefilled and written again.
    Some of this is the provider's own rule (the OpenAI API drops reasoning
    older than the latest user message, and Anthropic ignores thinking from
    earlier turns once a plain user message follows), but clients that strip
    reasoning themselves on every turn, or only on some, lose the cache each
    time.

    Example:
    Turn 2 re-sends the assistant message of turn 1 as
    ``[{"type": "text", ...}]`` although turn 1's request carried it as
    ``[{"type": "thinking", ...}, {"type": "text", ...}]``.

    Use instead:
    Re-send assistant messages exactly as they were returned, reasoning
    blocks (with their signatures or encrypted content) included, and let the
    provider decide what to drop.

        messages.append({"role": "assistant", "content": response.content})   # unchanged

    References:
    - https://github.com/gptme/gptme/issues/2727
    - https://github.com/cortexkit/magic-context/issues/125
    """

    code = "KV502"
    name = "reasoning-stripped"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.REASONING_STRIPPED)) is not None:
            yield pair_diagnostic(self, pair, kind, "reasoning dropped from the history", ctx)
