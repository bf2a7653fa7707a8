"""KV403: a longer-TTL breakpoint after a shorter-TTL one."""

from __future__ import annotations

import re
from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import Marker, anthropic_blocks, markers
from kvcache.analyzers.lint.provider_body import body_provider
from kvcache.analyzers.lint.rule import LintContext, Rule, register

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(ttl: str) -> float | None:
    """``"5m"`` -> 300.0, ``"1h"`` -> 3600.0; ``None`` for a value that is not a duration."""
    m = _DURATION.match(ttl)
    return float(m.group(1)) * _SECONDS[m.group(2)] if m else None


@register
class TTLOrder(Rule):
    """Cache breakpoints whose TTLs are out of order.

    What it does:
    Walks the ``cache_control`` markers of a request body in the order the
    provider processes them (tools, then system, then messages; a top-level
    marker for automatic caching sits on the last block) and reports every
    marker whose ``ttl`` is longer than that of a marker before it: a
    ``"ttl": "1h"`` marker after one with ``"5m"`` or no ``ttl`` (5 minutes
    is the default).

    Applies to Anthropic Messages bodies: ``--provider anthropic``, or,
    without ``--provider``, a body whose shape is Anthropic's (a top-level
    ``system``, ``cache_control`` markers, ``max_tokens`` + ``messages``).

    Why is this bad?
    Anthropic requires entries with a longer TTL to come first and rejects
    the request with HTTP 400: "a ttl='1h' cache_control block must not
    come after a ttl='5m' cache_control block. Note that blocks are
    processed in the following order: tools, system, messages". Proxies
    and plugins that add 1-hour markers next to a client's 5-minute ones
    trip over it.

    Example:
    A 5-minute system marker followed by a 1-hour marker in the messages::

        "system": [{"type": "text", "text": "...", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "...", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]

    Use instead:
    Give the stable prefix (tools, system) the longest TTL and the sliding
    conversation markers the same or a shorter one.

        "system": [{"type": "text", "text": "...", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "...", "cache_control": {"type": "ephemeral"}}]}]

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://github.com/cnighswonger/claude-code-cache-fix/issues/44
    - https://github.com/headroomlabs-ai/headroom/issues/2939
    """

    code = "KV403"
    name = "ttl-order"
    severity = "error"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if body_provider(doc, ctx) != "anthropic":
            return
        found = markers(doc.body, anthropic_blocks(doc.body))
        if found and found[-1].top_level and any(m.block == found[-1].block for m in found[:-1]):
            found.pop()  # the last block has its own marker: automatic caching adds no breakpoint there
        shortest: Marker | None = None
        shortest_s = float("inf")
        for m in found:
            secs = _seconds(m.ttl)
            if secs is None:
                continue  # not a duration: the API rejects it for another reason
            if secs > shortest_s and shortest is not None:
                yield self._report(doc, m, shortest)
            elif secs < shortest_s:
                shortest, shortest_s = m, secs

    def _report(self, doc: LintDocument, m: Marker, before: Marker) -> Diagnostic:
        span = doc.span_of(*m.path, "cache_control", "ttl") or doc.span_of(*m.path, "cache_control")
        prev = doc.span_of(*before.path, "cache_control")
        where = f" at line {doc.position(prev[0])[0]}" if prev else ""
        auto = " (top-level marker: automatic caching places it on the last block)" if m.top_level else ""
        assert span is not None, "a marker found in the body has no span"
        return self.diagnostic(
            doc, *span,
            f"ttl {m.ttl!r} breakpoint after a ttl {before.ttl!r} breakpoint{where}{auto}; Anthropic processes "
            "tools, system, messages in order and rejects a longer TTL after a shorter one with HTTP 400",
            tokens_at_risk=None,
        )
