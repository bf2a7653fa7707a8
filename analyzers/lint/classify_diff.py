"""Where two prompts part, and how much of the earlier one the later one repeats.

Both prompts are lists of segments with their token ids. Alignment works on
*pieces*: the segments from a start token on, the first one cut at the start
token when it falls inside it::

    prev:  | s0 | s1 | s2 ........ | s3 | s4 |
    cur:   | s0 | s1 | s2' ... | s5 | s3 | s4 | s6 |
                     ^ start (first divergent token, or earlier)
    pieces prev: [s2[start:], s3, s4]      pieces cur: [s2'[start:], s5, s3, s4, s6]

Pieces are aligned by :class:`difflib.SequenceMatcher` on their content
(strings, or token tuples). Inside a run of replaced pieces the tokens are
aligned by their common prefix and suffix, and by ``SequenceMatcher`` on what is
left between when both sides hold at most :data:`MAX_TOKEN_DIFF` tokens.
``repeated`` counts the later prompt's tokens that this alignment matches with
the earlier prompt's: the content it re-sends after the start, which a cache
keyed on the prefix can no longer serve.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOKEN_DIFF = 2000


@dataclass(slots=True)
class Hunk:
    """A change between aligned pieces, as segment index ranges of each prompt."""

    tag: str  # replace | delete | insert
    prev: range
    cur: range


@dataclass(slots=True)
class Alignment:
    repeated: int
    hunks: list[Hunk]


def segment_starts(tokens: Sequence[Sequence[int]]) -> list[int]:
    """Token offset of each segment, plus the total at the end."""
    return [0, *itertools.accumulate(map(len, tokens))]


def first_divergence(prev: Sequence[Any], cur: Sequence[Any], prev_tok: Sequence[Sequence[int]],
                     cur_tok: Sequence[Sequence[int]], *, by_token: bool = True) -> int:
    """Index of the first token where the two prompts differ (the shorter length if one extends the other).

    Segments are compared by content first (equal text means equal tokens), then
    token by token from the first segment that differs (unless ``by_token`` is
    false: the start of that segment, for prompts in different vocabularies).
    """
    i, offset = 0, 0
    n = min(len(prev), len(cur))
    while i < n and (prev_tok[i] is cur_tok[i] or prev[i] == cur[i]):
        offset += len(cur_tok[i])
        i += 1
    if not by_token:
        return offset
    a = itertools.chain.from_iterable(prev_tok[i:])
    b = itertools.chain.from_iterable(cur_tok[i:])
    for x, y in zip(a, b):
        if x != y:
            break
        offset += 1
    return offset


def segment_at(starts: list[int], token: int) -> int:
    """The segment holding ``token`` (the last segment for a token at or past the end)."""
    import bisect

    return max(0, min(bisect.bisect_right(starts, token) - 1, len(starts) - 2))


def _pieces(segs: Sequence[Any], toks: Sequence[Sequence[int]], starts: list[int],
            start: int) -> tuple[int, list[Any], list[Sequence[int]]]:
    first = segment_at(starts, start) if starts[-1] > start else len(segs)
    keys = list(segs[first:])
    tokens = list(toks[first:])
    if keys and start > starts[first]:
        tokens[0] = tokens[0][start - starts[first] :]
        keys[0] = ("partial", tuple(tokens[0]))
    return first, keys, tokens


def _matched_tokens(a: list[int], b: list[int]) -> int:
    p = 0
    n = min(len(a), len(b))
    while p < n and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and a[-1 - s] == b[-1 - s]:
        s += 1
    a_mid, b_mid = a[p : len(a) - s], b[p : len(b) - s]
    inner = 0
    if a_mid and b_mid and len(a_mid) <= MAX_TOKEN_DIFF and len(b_mid) <= MAX_TOKEN_DIFF:
        inner = sum(m.size for m in difflib.SequenceMatcher(None, a_mid, b_mid, autojunk=False).get_matching_blocks())
    return p + s + inner


def align(prev: Sequence[Any], cur: Sequence[Any], prev_tok: Sequence[Sequence[int]], cur_tok: Sequence[Sequence[int]],
          start: int, *, token_diff: bool = True) -> Alignment:
    """Align the two prompts from token ``start`` on (see the module docstring).

    Args:
        start: a token index at or before the first divergence.
        token_diff: align tokens inside replaced runs (off when the two prompts
            use different vocabularies, where equal ids mean nothing).
    """
    ps, pk, pt = _pieces(prev, prev_tok, segment_starts(prev_tok), start)
    cs, ck, ct = _pieces(cur, cur_tok, segment_starts(cur_tok), start)
    repeated = 0
    hunks: list[Hunk] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, pk, ck, autojunk=False).get_opcodes():
        if tag == "equal":
            repeated += sum(len(t) for t in ct[j1:j2])
            continue
        if tag == "replace" and token_diff:
            a = list(itertools.chain.from_iterable(pt[i1:i2]))
            b = list(itertools.chain.from_iterable(ct[j1:j2]))
            repeated += _matched_tokens(a, b)
        hunks.append(Hunk(tag, range(ps + i1, ps + i2), range(cs + j1, cs + j2)))
    return Alignment(repeated, hunks)
