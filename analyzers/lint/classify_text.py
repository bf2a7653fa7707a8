"""What kind of text edit turned one segment's text into another's.

:func:`text_edit` names the edit between two texts, checking in this order:

* ``whitespace``: equal once all whitespace is removed;
* ``json``: equal once every JSON object or array in them is re-serialized
  with sorted keys (same data, different bytes);
* ``thinking``: the new text is the old one with a run holding thinking
  blocks cut out;
* ``image``: the number of ``<image>`` placeholders changed;
* ``timestamp`` / ``random_id``: every differing span, widened to the word
  around it, is a date/time (or a UUID / hex id / prefixed id) on both sides,
  or a short inserted or removed line holding one;
* ``None``: some other content changed.

:func:`changed_spans` gives the differing spans (``old``, ``new``) for messages.
"""

from __future__ import annotations

import difflib
import json
import re

from kvcache.analyzers.lint.classify_layout import END, THINKING_MARKERS, thinking_count

_WS = re.compile(r"\s+")
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*\.?"
DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"  # ISO 8601
    # clock times (not file:line:col)
    r"|(?<![\w:.])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?![\d:])(?:\s?[AaPp][Mm])?(?:\s?(?:UTC|GMT|Z|[A-Z]{3,4}))?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}"  # 11/28/2026
    rf"|(?:{_DAY},?\s)?(?:{_MONTH}\s\d{{1,2}}(?:st|nd|rd|th)?,?\s\d{{4}}|\d{{1,2}}\s{_MONTH}\s\d{{4}})"  # Nov 28, 2026
    r"|\b1[5-9]\d{8}(?:\.\d+)?\b|\b1[5-9]\d{11}\b"  # unix seconds / milliseconds (2017-2033)
    rf"|\b{_DAY}\b"
)
RANDOM_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUID
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{8,}\b|\b(?=[0-9A-F]*[A-F])(?=[0-9A-F]*\d)[0-9A-F]{8,}\b"  # hex ids
    r"|\b[A-Za-z]{2,12}[_-](?=[A-Za-z0-9]*\d)[A-Za-z0-9]{8,}\b"  # prefixed ids: req_..., call_..., sess-...
)
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:.-+/")
MAX_DIFF_CHARS = 4000  # character diffs of longer runs only trim the common prefix and suffix
MAX_WIDEN = 64
_BLOCK_ENDS = (END, "<|tool_call|>", "<|tool_result|>")
INSERTED_LABEL = 40  # chars besides the matched value allowed in an inserted/removed line


def canonical_json(text: str) -> str:
    """``text`` with each JSON object/array re-serialized with sorted keys and compact separators."""
    out: list[str] = []
    decoder = json.JSONDecoder()
    i = last = 0
    while True:
        i = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if i < 0:
            break
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        out += [text[last:i], json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)]
        i = last = end
    out.append(text[last:])
    return "".join(out)


def changed_spans(old: str, new: str, *, widen: bool = True) -> list[tuple[str, str]]:
    """The differing spans of two texts, each widened to the word around it (unless ``widen`` is false)."""
    p = 0
    n = min(len(old), len(new))
    while p < n and old[p] == new[p]:
        p += 1
    s = 0
    while s < n - p and old[-1 - s] == new[-1 - s]:
        s += 1
    o_mid, n_mid = old[p : len(old) - s], new[p : len(new) - s]
    if len(o_mid) <= MAX_DIFF_CHARS and len(n_mid) <= MAX_DIFF_CHARS:
        matcher = difflib.SequenceMatcher(None, o_mid, n_mid, autojunk=False)
        ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
        spans = [(p + i1, p + i2, p + j1, p + j2) for _, i1, i2, j1, j2 in ops]
    else:
        spans = [(p, len(old) - s, p, len(new) - s)]
    if not widen:
        return [(old[i1:i2], new[j1:j2]) for i1, i2, j1, j2 in spans]
    merged: list[tuple[int, int, int, int]] = []
    for i1, i2, j1, j2 in spans:
        k = 0  # widen left and right over word characters both texts share
        while k < MAX_WIDEN and i1 > 0 and j1 > 0 and old[i1 - 1] == new[j1 - 1] and old[i1 - 1] in _WORD:
            i1, j1, k = i1 - 1, j1 - 1, k + 1
        k = 0
        while k < MAX_WIDEN and i2 < len(old) and j2 < len(new) and old[i2] == new[j2] and old[i2] in _WORD:
            i2, j2, k = i2 + 1, j2 + 1, k + 1
        if merged and i1 <= merged[-1][1]:
            a1, _, b1, _ = merged.pop()
            i1, j1 = min(a1, i1), min(b1, j1)
        merged.append((i1, i2, j1, j2))
    return [(old[i1:i2], new[j1:j2]) for i1, i2, j1, j2 in merged]


def _span_is(pattern: re.Pattern[str], old: str, new: str) -> bool:
    if not pattern.search(old) and not pattern.search(new):
        return False
    a, b = pattern.sub("\x00", old).strip(), pattern.sub("\x00", new).strip()
    if a == b:
        return True
    if not old.strip() or not new.strip():  # a short line holding the value was inserted or removed
        rest = (a or b).replace("\x00", "")
        return len(rest) <= INSERTED_LABEL
    return False


def value_kind(old: str, new: str) -> str | None:
    """``timestamp`` or ``random_id`` when every differing span is one, else ``None``."""
    for widen in (True, False):  # widened spans see whole values; raw ones keep an inserted line bare
        spans = changed_spans(old, new, widen=widen)
        kinds = []
        for o, n in spans:
            if _span_is(DATETIME, o, n):
                kinds.append("timestamp")
            elif _span_is(RANDOM_ID, o, n):
                kinds.append("random_id")
            else:
                break
        else:
            if kinds:
                return max(("timestamp", "random_id"), key=kinds.count)
    return None


def text_edit(old: str, new: str) -> str | None:
    """The kind of edit from ``old`` to ``new`` (see the module docstring)."""
    if old == new:
        return None
    if _WS.sub("", old) == _WS.sub("", new):
        return "whitespace"
    if ("{" in old or "[" in old) and canonical_json(old) == canonical_json(new):
        return "json"
    if thinking_count(new) < thinking_count(old) and _cut_out(old, new):
        return "thinking"
    if old.count("<image>") != new.count("<image>"):
        return "image"
    return value_kind(old, new)


def _cut_out(old: str, new: str) -> bool:
    """Whether ``new`` is ``old`` with one run of thinking blocks removed inside a message:
    the run starts at a thinking marker and crosses no message end or tool call."""
    n = len(old) - len(new)
    for marker in THINKING_MARKERS:
        m = old.find(marker)
        while n > 0 and m >= 0:
            cut = old[m : m + n]
            if old[:m] == new[:m] and old[m + n :] == new[m:] and not any(t in cut for t in _BLOCK_ENDS):
                return True
            m = old.find(marker, m + 1)
    return False


def changed_chars(old: str, new: str) -> int:
    """Characters in the differing spans of both sides (a size for "small edit")."""
    return sum(len(o) + len(n) for o, n in changed_spans(old, new, widen=False))
