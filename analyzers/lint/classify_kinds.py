"""Name the edits between two requests: parameters first, then each changed run of segments.

Every edit found gets the token where it starts to cost cache (``d``, an index
in the later prompt): 0 for a model switch; for a parameter, where the
provider's cache stops serving (providers.md: ``thinking`` and ``tool_choice``
invalidate the messages, ``speed`` and ``output_config`` the system prompt and
messages, a reasoning effort everything, as it sits in the system message); for
a content edit, its first token. The main edit is the earliest, ties broken by
:data:`PRIORITY`; a TTL gap is the main edit only when nothing else changed.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from kvcache.analyzers.lint.classify import EditClassification, EditKind, RequestView
from kvcache.analyzers.lint.classify_diff import Hunk, align, first_divergence, segment_at, segment_starts
from kvcache.analyzers.lint.classify_layout import (
    EFFORT_PREFIX, GENERATION_PROMPT, PREFIX_ROLES, Layout, is_structural, layout, tool_names, tools_from_segment,
)
from kvcache.analyzers.lint.classify_text import changed_chars, changed_spans, text_edit

K = EditKind
PRIORITY = [K.MODEL_SWITCH, K.REASONING_PARAMS, K.TOOL_CHOICE_OR_IMAGES, K.TOOL_SET_CHANGE, K.REORDERED_TOOLS,
            K.JSON_KEY_ORDER, K.TIMESTAMP_DRIFT, K.RANDOM_ID, K.PER_USER_DATA, K.WHITESPACE_ONLY,
            K.REASONING_STRIPPED, K.HISTORY_TRUNCATED, K.HISTORY_REWRITTEN, K.OTHER]
# Parameter -> where its change starts to cost cache: all, system (after the tools) or messages.
PARAM_SCOPE = {"reasoning": "all", "reasoning_effort": "all", "speed": "system", "output_config": "system",
               "thinking": "messages", "tool_choice": "messages"}
_TEXT_KINDS = {"whitespace": K.WHITESPACE_ONLY, "json": K.JSON_KEY_ORDER, "thinking": K.REASONING_STRIPPED,
               "image": K.TOOL_CHOICE_OR_IMAGES, "timestamp": K.TIMESTAMP_DRIFT, "random_id": K.RANDOM_ID}
_HISTORY = (K.HISTORY_REWRITTEN, K.HISTORY_TRUNCATED)
PER_USER_SHARE = 0.3  # an org prefix edit changing at most this share of both texts' characters is per-user data


def short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def param_changes(prev: RequestView, cur: RequestView) -> list[tuple[EditKind, str, str]]:
    """``(kind, parameter, detail)`` for the model and each cache-keying parameter that differs."""
    out = []
    if prev.model and cur.model and prev.model != cur.model:
        out.append((K.MODEL_SWITCH, "model", f"model {prev.model!r} -> {cur.model!r}"))
    for key in PARAM_SCOPE:
        a, b = prev.params.get(key), cur.params.get(key)
        if a != b:
            kind = K.TOOL_CHOICE_OR_IMAGES if key == "tool_choice" else K.REASONING_PARAMS
            was, now = (short(v) if v is not None else "unset" for v in (a, b))
            out.append((kind, key, f"{key} {was} -> {now}"))
    return out


def tool_change(prev_tools: list[Any] | None, cur_tools: list[Any] | None) -> tuple[EditKind, str] | None:
    """How two tool lists differ: set, order or key order; ``None`` when unknown or only definitions changed."""
    if prev_tools is None and cur_tools is None:
        return None
    a, b = prev_tools or [], cur_tools or []
    na, nb = tool_names(a), tool_names(b)
    if Counter(na) != Counter(nb):
        parts = [f"removed {', '.join(map(repr, sorted(set(na) - set(nb))))}" if set(na) - set(nb) else "",
                 f"added {', '.join(map(repr, sorted(set(nb) - set(na))))}" if set(nb) - set(na) else ""]
        return K.TOOL_SET_CHANGE, "; ".join(p for p in parts if p) or f"{len(na)} -> {len(nb)} tools"
    if na != nb:
        moved = next(x for x, y in zip(na, nb) if x != y)
        return K.REORDERED_TOOLS, f"the same {len(na)} tools in another order (first moved: {moved!r})"
    if a != b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
        return K.JSON_KEY_ORDER, "tool definitions re-serialized with their keys in another order"
    return None


def _tools_of(view: RequestView, lay: Layout) -> list[Any] | None:
    if view.tools is not None:
        return view.tools
    for i, role in enumerate(lay.roles[: lay.prefix_end]):
        if role == "tools" and (tools := tools_from_segment(view.segments[i])) is not None:
            return tools
    return None


class _Pair:
    """Two views with their layouts and token offsets, for the hunk checks."""

    def __init__(self, prev: RequestView, cur: RequestView, relation: str) -> None:
        self.prev, self.cur, self.relation = prev, cur, relation
        self.lp, self.lc = layout(prev.segments), layout(cur.segments)
        self.ps, self.cs = segment_starts(prev.segment_tokens), segment_starts(cur.segment_tokens)

    def where(self, h: Hunk) -> str:
        return self.lc.where(h.cur.start) if h.cur else self.lp.where(h.prev.start)

    def hunk_kind(self, h: Hunk) -> tuple[EditKind, str] | None:
        prev, cur, lp, lc = self.prev, self.cur, self.lp, self.lc
        old_segs = [prev.segments[i] for i in h.prev]
        new_segs = [cur.segments[j] for j in h.cur]
        if old_segs == new_segs:
            return None  # a replacement that SequenceMatcher paired with its twin
        roles = {lp.roles[i] for i in h.prev} | {lc.roles[j] for j in h.cur}
        if "tools" in roles and (tc := tool_change(_tools_of(prev, lp), _tools_of(cur, lc))):
            return tc
        efforts = [_effort(old_segs), _effort(new_segs)]
        if efforts[0] != efforts[1]:
            a, b = (short(e) if e else "unset" for e in efforts)
            return K.REASONING_PARAMS, f"reasoning effort {a} -> {b} in the system message"
        old_content = [i for i in h.prev if not is_structural(prev.segments[i])]
        new_content = [j for j in h.cur if not is_structural(cur.segments[j])]
        if not old_content and not new_content:
            return None  # headers realigned around another change
        if self.relation == "org" and all(type(s) is tuple for s in old_segs + new_segs if not is_structural(s)):
            return None  # pseudo tokens stand for text the log lacks: keyed per session, not comparable
        if old_content and not new_content and all(i in lp.reasoning for i in old_content):
            return K.REASONING_STRIPPED, f"{len(old_content)} reasoning block(s) dropped before {self.where(h)}"
        where = self.where(h)
        if all(type(s) is str for s in old_segs + new_segs):
            old, new = "".join(old_segs), "".join(new_segs)
            kind = _TEXT_KINDS.get(text_edit(old, new) or "")
            if kind is not None:
                return kind, self._text_detail(kind, old, new, where)
            small = changed_chars(old, new) <= PER_USER_SHARE * (len(old) + len(new))
            if roles <= PREFIX_ROLES and self.relation == "org" and small:
                return K.PER_USER_DATA, self._text_detail(K.PER_USER_DATA, old, new, where)
        if roles <= PREFIX_ROLES:
            if "tools" in roles:
                return K.TOOL_SET_CHANGE, "tool definitions changed"
            return K.OTHER, f"{where} changed"
        if h.tag == "delete":
            n = len({lp.message[i] for i in old_content if lp.message[i] >= 0})
            return K.HISTORY_TRUNCATED, f"{n} message(s) dropped from the history before {self.lc.where(h.cur.start)}"
        return K.HISTORY_REWRITTEN, f"{where} rewritten"

    @staticmethod
    def _text_detail(kind: EditKind, old: str, new: str, where: str) -> str:
        if kind == K.WHITESPACE_ONLY:
            return f"whitespace changed in {where}"
        if kind == K.JSON_KEY_ORDER:
            return f"the same JSON re-serialized with its keys in another order in {where}"
        if kind == K.REASONING_STRIPPED:
            return f"thinking blocks dropped from {where}"
        if kind == K.TOOL_CHOICE_OR_IMAGES:
            return f"images {old.count('<image>')} -> {new.count('<image>')} in {where}"
        o, n = changed_spans(old, new)[0]
        return f"{short(o.strip())} -> {short(n.strip())} in {where}"


def classify_views(prev: RequestView, cur: RequestView, relation: str = "session",
                   ttl: float | None = None) -> EditClassification:
    """Classify ``cur`` against ``prev`` (see :func:`kvcache.analyzers.lint.classify.classify_pair`)."""
    p = _Pair(prev, cur, relation)
    same_vocab = not (prev.model and cur.model and prev.model != cur.model)
    d_content = first_divergence(prev.segments, cur.segments, prev.segment_tokens, cur.segment_tokens,
                                 by_token=same_vocab)
    keep = p.ps[-1] if not prev.segments or prev.segments[-1] != GENERATION_PROMPT else p.ps[-2]
    found: list[tuple[int, int, EditKind, str]] = []
    scopes = {"all": 0, "system": _scope_start(p, ("system", "developer")), "messages": p.cs[p.lc.prefix_end]}
    for kind, key, detail in param_changes(prev, cur) if relation == "session" else ():
        d = 0 if key == "model" else scopes[PARAM_SCOPE[key]]
        found.append((d, PRIORITY.index(kind), kind, detail))
    breaks = d_content < keep
    gap = (cur.arrival - prev.arrival) if cur.arrival is not None and prev.arrival is not None else None
    ttl_gap = ttl is not None and gap is not None and gap > ttl
    starts = [d for d, *_ in found] + ([d_content] if breaks else []) + ([0] if ttl_gap else [])
    if not starts or min(starts) >= keep:
        return EditClassification(K.APPEND_ONLY, None, None, 0)
    start = min([d for d, *_ in found] + ([d_content] if breaks else [])) if found or breaks else 0
    al = align(prev.segments, cur.segments, prev.segment_tokens, cur.segment_tokens, start,
               token_diff=same_vocab)
    if breaks:
        content = [(d, *hk) for h in _split(al.hunks) if not _appended(h, prev) and (hk := p.hunk_kind(h))
                   for d in [max(d_content, p.cs[min(h.cur.start, len(cur.segments))])]]
        if not content:
            content = [(d_content, K.OTHER, f"{p.lc.where(segment_at(p.cs, d_content))} changed")]
        content[0] = (d_content, *content[0][1:])  # the first change starts at the first divergent token
        found += [(d, PRIORITY.index(kind), kind, detail) for d, kind, detail in content]
    found.sort(key=lambda f: (f[0], f[1]))
    kinds = list(dict.fromkeys(f[2] for f in found))
    if ttl_gap:
        kinds.append(K.TTL_GAP)
    d, _, main, detail = found[0] if found else (0, 0, K.TTL_GAP, ttl_detail(gap, ttl))  # type: ignore[arg-type]
    if main in _HISTORY:  # a compaction is one rewrite and many drops: name them together
        detail = ", ".join(dict.fromkeys(f[3] for f in found if f[2] in _HISTORY))
    return EditClassification(main, d, segment_at(p.cs, d), al.repeated, detail, [k for k in kinds if k != main])


def _effort(segs: list[Any]) -> str | None:
    """The effort a rendered ``Reasoning: X`` system message names (Responses, Codex)."""
    for s in segs:
        if type(s) is str and s.startswith(EFFORT_PREFIX):
            return s[len(EFFORT_PREFIX) :].split("<|", 1)[0]
    return None


def _split(hunks: list[Hunk]) -> list[Hunk]:
    """Replacements of as many segments as they replace, one hunk per segment pair."""
    out = []
    for h in hunks:
        if h.tag == "replace" and len(h.prev) == len(h.cur) > 1:
            out += [Hunk("replace", range(i, i + 1), range(j, j + 1)) for i, j in zip(h.prev, h.cur)]
        else:
            out.append(h)
    return out


def _appended(h: Hunk, prev: RequestView) -> bool:
    """A change after everything the earlier prompt held (what a turn appends)."""
    if h.prev.start >= len(prev.segments):
        return True
    return h.prev.stop == len(prev.segments) and all(is_structural(prev.segments[i]) for i in h.prev)


def _scope_start(p: _Pair, roles: tuple[str, ...]) -> int:
    first = next((i for i, r in enumerate(p.lc.roles[: p.lc.prefix_end]) if r in roles), p.lc.prefix_end)
    return p.cs[first]


def ttl_detail(gap: float | None, ttl: float | None) -> str:
    return f"{_duration(gap or 0)} between requests, longer than the {_duration(ttl or 0)} cache TTL"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
