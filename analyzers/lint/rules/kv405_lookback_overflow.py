"""KV405: a breakpoint too many blocks after the entry the previous request wrote."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, block_tokens, markers
from kvcache.analyzers.lint.provider_body import body_provider, provider_rules
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class LookbackOverflow(Rule):
    """The latest turn adds more blocks than a breakpoint can look back over.

    What it does:
    Finds where the previous request's prompt ended (the blocks before the
    last assistant message that a user message follows), the first
    ``cache_control`` breakpoint after that point, and counts the content
    blocks between the two. More than the provider's lookback
    (``lookback_blocks`` in ``engine/data/providers.json``: 20 for
    Anthropic) is reported on that breakpoint::

        ... | previous turn's last block (k) | assistant blocks | tool results | breakpoint (m)
                                              <------------- m - k blocks -------------->

    A top-level ``cache_control`` (automatic caching) counts as a breakpoint
    on the last block. Content blocks are tools, system blocks and message
    content blocks (a string content is one block).

    Applies to Anthropic Messages bodies: ``--provider anthropic``, or,
    without ``--provider``, a body whose shape is Anthropic's (a top-level
    ``system``, ``cache_control`` markers, ``max_tokens`` + ``messages``).

    Why is this bad?
    A cache entry is written only at a breakpoint, and a later request
    finds it only if one of its own breakpoints sits on the same block or
    at most 20 blocks after it. An agent turn with many parallel tool calls
    (each ``tool_use`` and ``tool_result`` is a block) pushes the new
    breakpoint past that window: the previous turn's entry is not found,
    and the whole conversation since the last reachable entry is written
    again at 1.25 times the input price.

    Example:
    An assistant turn with 12 tool calls, and the 12 results marked on the
    last one: 24 blocks since the previous turn's breakpoint::

        {"role": "assistant", "content": [{"type": "tool_use", ...} x 12]},
        {"role": "user", "content": [{"type": "tool_result", ...} x 11,
            {"type": "tool_result", ..., "cache_control": {"type": "ephemeral"}}]}

    Use instead:
    Add a second breakpoint within 20 blocks of the previous turn's end,
    for instance on the assistant message (up to four breakpoints are
    allowed).

        {"role": "assistant", "content": [{"type": "tool_use", ...} x 11,
            {"type": "tool_use", ..., "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "tool_result", ...} x 11,
            {"type": "tool_result", ..., "cache_control": {"type": "ephemeral"}}]}

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    - https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html
    - https://github.com/microsoft/vscode/pull/315505 (a second sliding breakpoint as a fallback)
    """

    code = "KV405"
    name = "lookback-overflow"
    severity = "warning"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if body_provider(doc, ctx) != "anthropic":
            return
        rules = provider_rules("anthropic", doc.model)
        msgs = doc.body.get("messages") if isinstance(doc.body, dict) else None
        if rules is None or rules.lookback_blocks is None or not isinstance(msgs, list):
            return
        roles = [m.get("role") if isinstance(m, dict) else None for m in msgs]
        # The previous request's prompt: the messages before the last assistant reply that a user message follows.
        turn = next((a for a in range(len(msgs) - 2, 0, -1)
                     if roles[a] == "assistant" and "user" in roles[a + 1 :]), None)
        if turn is None:
            return  # a first turn: no earlier entry to find
        blocks = anthropic_blocks(doc.body)
        before = [n for n, b in enumerate(blocks) if b.message is not None and b.message < turn]
        found = markers(doc.body, blocks)
        if not before:
            return
        k = before[-1]
        later = [m for m in found if m.block > k]
        if not later:
            return  # this request does not try to read past the previous turn
        first = min(later, key=lambda m: m.block)
        gap = first.block - k
        lookback = rules.lookback_blocks
        span = doc.span_of(*first.path, "cache_control")
        if gap <= lookback or span is None:
            return
        fallback = max((m.block for m in found if m.block <= k), default=-1)
        lost = block_tokens(blocks[fallback + 1 : k + 1])
        reach = "the earlier breakpoint" if fallback >= 0 else "the start of the prompt"
        yield self.diagnostic(
            doc, *span,
            f"{gap} content blocks since the previous turn ended (after message {turn - 1}); a breakpoint looks back "
            f"only {lookback} blocks, so the previous request's entry is not found and everything from {reach} on "
            "is written again",
            tokens_at_risk=lost,
        )
