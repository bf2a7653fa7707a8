"""Reused block keys must equal a full rehash, whatever the turns do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.traces.prefix_memo import PrefixHashMemo

SEGMENTS = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=9).map(tuple), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    turns=st.lists(st.tuples(st.sampled_from(["extend", "rewrite", "new"]), SEGMENTS,
                             st.lists(st.integers(0, 5), max_size=5), st.sampled_from([None, "org"])),
                   min_size=1, max_size=6),
    block_size=st.sampled_from([1, 2, 4, 16]),
    algo=st.sampled_from(["xxh3_128", "sha256"]),
)
def test_memo_keys_equal_a_full_rehash(turns, block_size, algo) -> None:
    memo = PrefixHashMemo()
    segments: list[tuple[int, ...]] = []
    for kind, more, tail, salt in turns:
        if kind == "extend":  # the next turn: history plus new segments
            segments = segments + more
        elif kind == "rewrite" and segments:  # an edit in the middle of the history
            segments = segments[: len(segments) // 2] + more
        else:
            segments = list(more)
        pieces = [list(s) for s in segments]
        tokens = [t for p in pieces for t in p] + tail
        expected = hash_token_blocks(tokens, block_size, algo, salt)
        got = memo.keys("s", segments, pieces, tail, block_size, (algo, salt, None, "v"))
        assert got == expected


def test_reuse_happens_and_is_counted() -> None:
    memo = PrefixHashMemo()
    a = [(1,) * 16, (2,) * 16]
    memo.keys("s", a, [list(x) for x in a], [], 16, ("xxh3_128", None, None, "v"))
    b = a + [(3,) * 16]
    memo.keys("s", b, [list(x) for x in b], [], 16, ("xxh3_128", None, None, "v"))
    assert (memo.blocks_reused, memo.blocks_hashed) == (2, 3)
    # Another vocabulary (or salt, or block size) never reuses.
    memo.keys("s", b, [list(x) for x in b], [], 16, ("xxh3_128", None, None, "other"))
    assert memo.blocks_reused == 2
