"""KV301: the tool set changes between turns of a session."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class ToolSetChange(Rule):
    """Tools added, removed or redefined between two requests that should share them.

    What it does:
    Compares each request of a trace with the previous request of its
    session (and the first request of each session with the other sessions of
    its org) and reports when the tool definitions differ: a tool added or
    removed, or a definition edited. Reordering the same tools is KV201.

    Why is this bad?
    Tools come first in the hash order of every provider (tools, system,
    messages), so any change to them invalidates the whole cached prompt: the
    system prompt and the entire conversation are written to the cache again.
    Agents that narrow the tool list per step, load MCP servers lazily or
    filter tools by state pay this on every turn.

    Example:
    Turn 1 sends ``tools: [search, fetch, edit]``; turn 2, after a planning
    step, sends only ``[fetch, edit]``.

    Use instead:
    Send the same tool list on every turn and steer the model with
    ``tool_choice`` / ``allowed_tools``, or mask tools the step must not use
    (reject the call) instead of removing them from the request.

        tools: [search, fetch, edit]   # every turn
        tool_choice: {"type": "allowed_tools", "tools": [fetch, edit]}

    References:
    - https://github.com/strands-agents/harness-sdk/issues/4097
    - https://github.com/pydantic/pydantic-ai/issues/6083
    - https://github.com/uezo/aiavatarkit/issues/135
    """

    code = "KV301"
    name = "tool-set-change"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.TOOL_SET_CHANGE)) is not None:
            what = "tools changed" if pair.relation == "session" else "tools differ"
            yield pair_diagnostic(self, pair, kind, what, ctx)
