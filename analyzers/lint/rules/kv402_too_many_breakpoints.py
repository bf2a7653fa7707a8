"""KV402: more ``cache_control`` breakpoints than the provider accepts."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, markers
from kvcache.analyzers.lint.provider_body import body_provider, provider_fact
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class TooManyBreakpoints(Rule):
    """Too many cache breakpoints in one request.

    What it does:
    Counts the ``cache_control`` markers of a request body, in the order
    the provider processes them (tools, then system, then messages), and
    reports the first marker past the provider's limit
    (``max_breakpoints`` in ``engine/data/providers.json``: 4 for
    Anthropic). A top-level ``cache_control`` (automatic caching) takes
    one of the slots too, so it counts.

    Applies to Anthropic Messages bodies: ``--provider anthropic``, or,
    without ``--provider``, a body whose shape is Anthropic's (a top-level
    ``system``, ``cache_control`` markers, ``max_tokens`` + ``messages``).
    Markers inside a ``tool_result``'s content count as well.

    Why is this bad?
    The API rejects the whole request with HTTP 400 ("A maximum of 4
    blocks with cache_control may be provided. Found 5."). It typically
    happens when a framework adds its own markers (or a top-level one) on
    top of the application's.

    Example:
    Four block markers plus automatic caching, five in all::

        {"model": "claude-sonnet-4-5", "max_tokens": 1024,
         "cache_control": {"type": "ephemeral"},
         "tools": [{"name": "search", ..., "cache_control": {"type": "ephemeral"}}],
         "system": [{"type": "text", "text": "...", "cache_control": {"type": "ephemeral"}}],
         "messages": [... two more markers on the last two turns ...]}

    Use instead:
    Keep at most four markers: typically the last tool, the last system
    block and the last one or two messages. Drop the top-level
    ``cache_control`` when you place markers yourself.

        {"model": "claude-sonnet-4-5", "max_tokens": 1024,
         "tools": [{"name": "search", ..., "cache_control": {"type": "ephemeral"}}],
         "system": [{"type": "text", "text": "...", "cache_control": {"type": "ephemeral"}}],
         "messages": [... markers on the last two turns ...]}

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://github.com/docker/docker-agent/issues/3692
    - https://github.com/oguzbilgic/kern-ai/issues/317
    - https://github.com/coder/mux/pull/3112 (a top-level marker made it five)
    """

    code = "KV402"
    name = "too-many-breakpoints"
    severity = "error"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if body_provider(doc, ctx) != "anthropic":
            return
        limit = provider_fact("anthropic", doc.model, "max_breakpoints")
        found = markers(doc.body, anthropic_blocks(doc.body))
        if not isinstance(limit, int) or len(found) <= limit:
            return
        extra = found[limit]
        span = doc.span_of(*extra.path, "cache_control")
        if span is None:
            return
        where = "the top-level marker of automatic caching" if extra.top_level else "this marker"
        yield self.diagnostic(
            doc, *span,
            f"{len(found)} cache_control breakpoints; Anthropic accepts at most {limit} and rejects the request "
            f"with HTTP 400 (number {limit + 1}: {where})",
            tokens_at_risk=None,
        )
