"""KV201 unstable-tool-order: tools listed in an order that can change between requests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kvcache.analyzers.lint.classify import EditKind
from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit, Fix
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_body import tool_name
from kvcache.analyzers.lint.static_common import pair_findings
from kvcache.analyzers.lint.static_order import unordered_tools
from kvcache.analyzers.lint.static_python import module

# Tools a client discovers at run time carry their server's name: mcp__github__create_issue,
# github__create_issue, github.create_issue, github/create_issue.
_NAMESPACED = re.compile(r"^(?:mcp__)?[A-Za-z0-9-]+(?:__|[./:])[A-Za-z0-9_.-]+$")


@register
class UnstableToolOrder(Rule):
    """Tools listed in an order that can change between requests.

    What it does:
    Finds tool lists whose order is not fixed. In Python: a ``tools`` list built,
    without ``sorted(...)``, by iterating a set, the ``.values()``/``.items()``/
    ``.keys()`` of a registry dict, an MCP ``list_tools()`` result or a directory
    listing, or shuffled with ``random.shuffle``. In a request body: tools that a
    client discovered at run time (MCP-style names such as
    ``mcp__github__create_issue`` or ``github.create_issue``) not sorted by name.
    In traces: consecutive requests with the same tools in a different order.

    Python dicts keep insertion order, so the risk is not the dict itself: the
    order is the order tools were registered or discovered (decorators, plugin
    loading, ``list_tools`` of several MCP servers), which changes with imports,
    server versions and connection timing; a ``set`` of ``str`` changes with every
    process (hash randomization). A dict literal written in the source is stable
    and not reported. A hand-written, un-namespaced tool list in a body has a
    fixed order and is not reported either: one body cannot show that an order
    changes, the trace check does.

    Why is this bad?
    Tools come first in every provider's prompt, so a new order changes the very
    first tokens and nothing of the prompt can be reused. Codex built its MCP tools
    from a HashMap and saw under 1% cache hits.

    Example:
    Tools listed in the order they were registered:

        tools = [to_schema(fn) for fn in REGISTRY.values()]

    Use instead:
    Sort tools by name wherever the list is built (``--fix`` sorts a body's
    ``tools`` array).

        tools = sorted((to_schema(fn) for fn in REGISTRY.values()), key=lambda t: t["name"])

    References:
    - https://github.com/openai/codex/issues/2611
    - https://github.com/can1357/oh-my-pi/issues/890
    - https://github.com/langchain-ai/deepagents/issues/2497
    - https://github.com/maximhq/bifrost/issues/2347
    """

    code = "KV201"
    name = "unstable-tool-order"
    severity = "warning"
    kinds = frozenset({"body", "python"})
    pairs = True
    fixable = True

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for node, why in unordered_tools(mod):
                start, end = mod.span(node)
                yield self.diagnostic(doc, start, end, f"tool order is not stable: {why}; sort the tools by name",
                                      tokens_at_risk=None)
            return
        tools = doc.body.get("tools") if isinstance(doc.body, dict) else None
        if not isinstance(tools, list):
            return
        names = [tool_name(t) for t in tools]
        dynamic = [i for i, n in enumerate(names) if _NAMESPACED.match(n)]
        order = sorted(dynamic, key=lambda i: names[i])
        if len(dynamic) < 2 or order == dynamic:
            return
        first, should = next((i, j) for i, j in zip(dynamic, order) if i != j)
        span = doc.span_of("tools", first)
        if span is None:
            return
        yield self.diagnostic(
            doc, span[0], span[1],
            f"tools discovered at run time are not sorted by name (`{names[first]}` where `{names[should]}` "
            "belongs); their order follows discovery, which can change between requests",
            fix=_sort_fix(doc, tools, names))

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        yield from pair_findings(self, pair, EditKind.REORDERED_TOOLS, "tool order changed")


def _sort_fix(doc: LintDocument, tools: list[Any], names: list[str]) -> Fix | None:
    """Sort the ``tools`` array by name, each tool's text moved whole into the slots (formatting kept).

    No fix when a tool carries ``cache_control``: the breakpoint belongs on the
    last tool, and moving it would move what is cached.
    """
    spans = [doc.span_of("tools", i) for i in range(len(tools))]
    if any(s is None for s in spans) or any(isinstance(t, dict) and "cache_control" in t for t in tools):
        return None
    order = sorted(range(len(tools)), key=lambda i: names[i])
    text = doc.text
    pieces = []
    for slot, src in enumerate(order):
        pieces.append(text[spans[src][0] : spans[src][1]])  # type: ignore[index]
        if slot + 1 < len(spans):
            pieces.append(text[spans[slot][1] : spans[slot + 1][0]])  # type: ignore[index]
    start, end = spans[0][0], spans[-1][1]  # type: ignore[index]
    line, col = doc.position(start)
    end_line, end_col = doc.position(end)
    edit = Edit(line, col, end_line, end_col, "".join(pieces))
    return Fix("sort the tools array by name (changes the prompt: the next request writes a new cache entry)",
               (edit,), changes_prompt=True)
