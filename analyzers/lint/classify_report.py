"""Turn a classified request pair into a diagnostic (shared by the pair rules).

A pair's finding sits on the later request: its JSONL line (for a whole-file
log, the first line of the call), column 1. ``tokens_at_risk`` is the pair's
``tokens_recomputed`` when the rule's kind is the main edit; for a kind found
alongside another, see :func:`tokens_for`.
"""

from __future__ import annotations

from typing import Any

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.diagnostic import Diagnostic


def kinds_of(pair: RequestPair) -> list[EditKind]:
    """The pair's main edit, then the others."""
    return [pair.classification.kind, *pair.classification.others]


def has_kind(pair: RequestPair, *kinds: EditKind) -> EditKind | None:
    """The first of ``kinds`` the pair shows (main edit first), or ``None``."""
    return next((k for k in kinds_of(pair) if k in kinds), None)


def since(pair: RequestPair) -> str:
    """``since request X`` (same session) or ``from request X of another session``."""
    if pair.relation == "org":
        org = f" of org {pair.cur.org!r}" if pair.cur.org else ""
        return f"from request {pair.prev.request_id} (another session{org})"
    return f"since request {pair.prev.request_id}"


def tokens_for(pair: RequestPair, kind: EditKind) -> int:
    """Tokens recomputed because of ``kind``.

    The main edit costs ``tokens_recomputed``. A TTL gap found with another edit
    costs the tokens before that edit (they expired; the edit costs the rest).
    Another secondary edit starts at or after the main one, so its cost is
    already counted there: the same ``tokens_recomputed`` is reported.
    """
    cls = pair.classification
    if kind is EditKind.TTL_GAP and cls.kind is not EditKind.TTL_GAP:
        return cls.first_divergent_token or 0
    return cls.tokens_recomputed


def describe(pair: RequestPair, kind: EditKind, ctx: Any = None) -> str:
    """One line on what ``kind`` changed in this pair (the main edit's detail, or rebuilt)."""
    from kvcache.analyzers.lint.classify_kinds import param_changes, tool_change, ttl_detail
    from kvcache.analyzers.lint.classify_views import ttl_seconds

    cls = pair.classification
    if kind is cls.kind and cls.detail:
        return cls.detail
    prev, cur = pair.prev, pair.cur
    params = [d for k, _, d in param_changes(prev, cur) if k is kind]
    if params:
        return "; ".join(params)
    if kind is EditKind.TOOL_SET_CHANGE and (tc := tool_change(prev.tools, cur.tools)) is not None:
        return tc[1]
    if kind is EditKind.TTL_GAP and prev.arrival is not None and cur.arrival is not None:
        return ttl_detail(cur.arrival - prev.arrival, ttl_seconds(getattr(ctx, "provider", None), cur))
    return kind.value.replace("-", " ")


def pair_diagnostic(rule: Any, pair: RequestPair, kind: EditKind, what: str, ctx: Any = None) -> Diagnostic:
    """``{what} {since}: {detail}; N prompt tokens recomputed`` on the later request's line."""
    n = tokens_for(pair, kind)
    line = pair.cur.line
    return Diagnostic(
        code=rule.code, name=rule.name, severity=rule.severity, path=pair.cur.path, line=line, col=1,
        end_line=line, end_col=2, tokens_at_risk=n,
        message=f"{what} {since(pair)}: {describe(pair, kind, ctx)}; {n:,} prompt tokens recomputed",
        why=rule.why(), instead=rule.instead(),
    )
