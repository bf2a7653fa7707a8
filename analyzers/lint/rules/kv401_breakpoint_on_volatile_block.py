"""KV401: a cache breakpoint on a block that changes on every request."""

from __future__ import annotations

import re
from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, block_tokens, markers
from kvcache.analyzers.lint.provider_body import body_provider
from kvcache.analyzers.lint.rule import LintContext, Rule, register

# What changes between two requests a few seconds apart. Dates alone stay (a
# day is longer than any TTL), and so do bare UUIDs (often a fixed id, or a
# session's) and times without seconds or a "time is" (opening hours, schedules).
VOLATILE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a date-time", re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")),
    ("a clock time", re.compile(r"(?<![\d:])\d{1,2}:\d{2}:\d{2}(?![\d:])")),
    ("a clock time", re.compile(r"(?i)\btime(?: is|:| now:?)\s*\d{1,2}:\d{2}\b")),
    ("a Unix timestamp", re.compile(r"(?i)\b(?:timestamp|epoch|unix time|now)\W{1,3}1[5-9]\d{8}(?:\d{3})?\b")),
    ("a request id", re.compile(
        r"(?i)\b(?:(?:request|req|trace|correlation|span|run|invocation)[ _-]?id|nonce)\W{1,3}[\w-]{6,}")),
)
_NOUN = {"tools": "tool definition", "system": "system block"}


def volatile_match(text: str) -> tuple[str, str] | None:
    """``(what, matched text)`` of the first volatile value in ``text``, or ``None``."""
    hits = [(m.start(), what, m.group()) for what, rx in VOLATILE if (m := rx.search(text))]
    if not hits:
        return None
    _, what, found = min(hits)
    return what, found


@register
class BreakpointOnVolatileBlock(Rule):
    """A cache breakpoint on a block that changes on every request.

    What it does:
    Looks at every ``cache_control`` marker on a tool definition or a
    system block and reports it when the marked block holds a value that
    differs from one request to the next: a clock time or date-time, a
    Unix timestamp, or a labelled request, trace or run id.

    Markers on messages are not checked: history is sent again verbatim,
    so a time written into an earlier turn stays the same in later
    requests. Applies to Anthropic Messages bodies: ``--provider
    anthropic``, or, without ``--provider``, a body whose shape is
    Anthropic's (a top-level ``system``, ``cache_control`` markers,
    ``max_tokens`` + ``messages``).

    Why is this bad?
    A breakpoint writes a cache entry for the prefix that ends at its
    block, and the next request can read it only if that prefix is
    byte-identical. With a timestamp inside the block, every request
    writes a new entry (at 1.25 times the input price) that no later
    request will ever read, and the breakpoint slot is wasted. Anthropic's
    prompt-caching guide lists this as a common mistake.

    Example:
    The current time in the marked system block::

        "system": [
          {"type": "text", "text": "You are a support agent for Acme."},
          {"type": "text", "text": "Current time: 2025-06-01T14:32:05Z",
           "cache_control": {"type": "ephemeral"}}]

    Use instead:
    Put the breakpoint on the last block that stays the same, and move the
    changing value after it (into the latest user message), or coarsen it
    to the date.

        "system": [
          {"type": "text", "text": "You are a support agent for Acme.",
           "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": "Current time: 2025-06-01T14:32:05Z"}]

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://github.com/aaif-goose/goose/issues/2434
    - https://github.com/abstxn/lunch-uncle/issues/6
    """

    code = "KV401"
    name = "breakpoint-on-volatile-block"
    severity = "warning"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if body_provider(doc, ctx) != "anthropic":
            return
        blocks = anthropic_blocks(doc.body)
        previous = -1  # block of the previous breakpoint: what is before it can still be read
        for m in markers(doc.body, blocks):
            block = blocks[m.block]
            hit = volatile_match(block.text or "") if block.section != "messages" and not m.top_level else None
            span = doc.span_of(*m.path, "cache_control")
            if hit is not None and span is not None:
                what, found = hit
                yield self.diagnostic(
                    doc, *span,
                    f"breakpoint on a {_NOUN[block.section]} holding {what} ({found!r}): the entry written here "
                    "changes on every request and is never read",
                    tokens_at_risk=block_tokens(blocks[previous + 1 : m.block + 1]),
                )
            previous = m.block
