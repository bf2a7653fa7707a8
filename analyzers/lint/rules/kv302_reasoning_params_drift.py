"""KV302: reasoning parameters change between turns of a session."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class ReasoningParamsDrift(Rule):
    """The thinking or reasoning-effort settings change within a session.

    What it does:
    Reports a request whose ``thinking`` (type, ``budget_tokens``),
    ``reasoning_effort`` / ``reasoning.effort``, ``output_config`` (effort) or
    ``speed`` differs from the previous request of its session, or whose
    rendered reasoning effort (Responses and Codex put it in the system
    message) differs from another session of its org.

    Why is this bad?
    These parameters key the provider's cache although they are not part of
    the prompt text. On Anthropic a change to the thinking parameters
    invalidates every cached message block (``speed`` also the system
    prompt); OpenAI lists a change of reasoning effort among the causes of a
    cache miss, since the effort sits in the system message. Agents that
    raise the effort for hard steps or toggle thinking per turn re-send the
    whole conversation uncached.

    Example:
    Turn 1 sends ``"thinking": {"type": "enabled", "budget_tokens": 4096}``;
    turn 2 sends ``"budget_tokens": 16000`` for a harder step.

    Use instead:
    Fix the reasoning settings per session (or per agent) and keep them for
    every turn; start a new session, or a sub-agent, for work that needs
    another setting.

        thinking = {"type": "enabled", "budget_tokens": 8192}   # chosen once per session

    References:
    - https://github.com/zed-industries/zed/issues/34155
    - https://github.com/NousResearch/hermes-agent/issues/100891
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    """

    code = "KV302"
    name = "reasoning-params-drift"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.REASONING_PARAMS)) is not None:
            yield pair_diagnostic(self, pair, kind, "reasoning parameters changed", ctx)
