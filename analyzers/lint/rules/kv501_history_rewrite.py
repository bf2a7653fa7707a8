"""KV501: history rewritten or truncated in place."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class HistoryRewrite(Rule):
    """Earlier messages are edited, summarised or dropped instead of appended to.

    What it does:
    Reports a request whose history does not extend the previous request of
    its session: a message before the end was changed (old tool results
    truncated or re-truncated, a summary in place of turns, an edited user
    message) or messages were dropped from the middle (a sliding window that
    keeps the task and the latest turns).

    Why is this bad?
    A prefix cache serves a prompt only up to its first changed token.
    Everything after the edit, usually the rest of the conversation, is
    prefilled and written to the cache again, and with a sliding window this
    happens on every turn once the window is full. Reported cases reach
    millions of cache-write tokens a day.

    Example:
    At turn 8 an agent replaces the tool results of turns 1–3 with
    ``[output truncated]`` to save context, or drops turns 2–4 and keeps the
    first user message and turns 5–7.

    Use instead:
    Keep the history append-only. When it must shrink, compact rarely and in
    one step (a summary once, at a boundary you choose), then append to the
    compacted history; truncate a tool result once, when it is first added.

        history.append(result if len(result) < LIMIT else result[:LIMIT])   # cut once, never later

    References:
    - https://github.com/openclaw/openclaw/issues/95219
    - https://github.com/openclaw/openclaw/issues/111085
    - https://github.com/LibreChat-AI/agents/issues/497
    """

    code = "KV501"
    name = "history-rewrite"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        kind = has_kind(pair, EditKind.HISTORY_REWRITTEN, EditKind.HISTORY_TRUNCATED)
        if kind is not None:
            what = "history rewritten" if kind is EditKind.HISTORY_REWRITTEN else "history truncated"
            yield pair_diagnostic(self, pair, kind, what, ctx)
