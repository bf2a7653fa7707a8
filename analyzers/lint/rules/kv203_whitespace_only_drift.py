"""KV203: the prompt changes only in whitespace between requests."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class WhitespaceOnlyDrift(Rule):
    """Text already sent changes only in whitespace on a later request.

    What it does:
    Reports a request whose system prompt, tools or history differs from the
    previous request of its session (or, for the system prompt and tools, from
    another session of its org) only in whitespace: trailing spaces, blank
    lines, indentation, ``\\r\\n`` against ``\\n``, JSON spacing.

    Why is this bad?
    Prefix caches compare tokens, not meaning: one extra newline changes the
    tokens from there on, and everything after it is prefilled and written to
    the cache again. Such drift comes from templates that strip or pad
    conditionally, from re-serializing stored messages with other
    separators, and from editors or platforms that normalise line endings.

    Example:
    Turn 1 sends the system prompt ``"You are a helpful agent.\\n\\nRules:..."``;
    turn 2 renders it from a template that trims blocks:
    ``"You are a helpful agent.\\nRules:..."``.

    Use instead:
    Render the prefix once per session (or per deployment) and re-send the
    stored bytes; store messages as sent and never re-format them.

        system = render_system()   # once; reuse the same string on every turn

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://developers.openai.com/api/docs/guides/prompt-caching
    - https://docs.vllm.ai/en/latest/design/prefix_caching.html
    """

    code = "KV203"
    name = "whitespace-only-drift"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.WHITESPACE_ONLY)) is not None:
            yield pair_diagnostic(self, pair, kind, "whitespace changed", ctx)
