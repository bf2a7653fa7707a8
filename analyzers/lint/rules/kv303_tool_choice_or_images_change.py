"""KV303: tool_choice changes, or images appear or disappear, between turns."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class ToolChoiceOrImagesChange(Rule):
    """``tool_choice`` changes, or images in the history come and go, within a session.

    What it does:
    Reports a request whose ``tool_choice`` differs from the previous request
    of its session, or whose already-sent history gained or lost images
    (image parts, rendered as ``<image>``) compared with that request.

    Why is this bad?
    Anthropic's cache invalidation table lists ``tool_choice`` and the
    presence or absence of images anywhere in the prompt among the changes
    that invalidate every cached message block: the conversation is written
    to the cache again, only tools and system survive. Clients that force a
    tool on one step (``{"type": "tool", "name": ...}``) and go back to
    ``auto`` on the next, or strip old screenshots from the history to save
    tokens, pay for the whole conversation each time.

    Example:
    Turn 3 sends ``"tool_choice": {"type": "tool", "name": "submit"}`` after
    turns 1 and 2 sent ``"auto"``; or turn 4 drops the screenshot that turn 3
    carried in an earlier user message.

    Use instead:
    Keep ``tool_choice`` constant within a session and ask for the tool in the
    message instead; keep images in the history once sent (or replace them
    once, at a compaction point you choose).

        tool_choice = "auto"   # every turn; "Please call submit now." in the user message

    References:
    - https://platform.claude.com/docs/en/build-with-claude/prompt-caching
    """

    code = "KV303"
    name = "tool-choice-or-images-change"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.TOOL_CHOICE_OR_IMAGES)) is not None:
            yield pair_diagnostic(self, pair, kind, "tool_choice or images changed", ctx)
