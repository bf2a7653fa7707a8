"""The C accelerator ``kvcache.engine._seqcache.SeqCache`` against the Python references.

``SeqCache.cycle`` is the sequential replay's whole-request cycle (lookup, touch,
allocate, cache, free tail first) in C. It must do exactly what
``KVCacheManager.run_isolated`` (over ``BlockPool.cycle_isolated``) and the naive
oracle ``engine/naive.NaivePrefixCache.run`` do: same hit and new block ids, same
rejections, free-queue order, hash map, duplicates and eviction count, after
every request. Tiny pools and exact block ids, as in the other engine tests.

Scenarios that can corrupt the C state (and so loop forever or exhaust memory
when the free queue is walked) run in a child process under a time and memory
limit, so a regression fails here instead of hanging the suite.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import textwrap
import weakref
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kvcache.engine.config import CacheConfig
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.naive import NaivePrefixCache
from kvcache.engine.replay import SequentialReplayer, load_accelerator
from kvcache.engine.request import Request

PURE_PYTHON = os.environ.get("KVCACHE_PURE_PYTHON", "") not in ("", "0")


# ------------------------------------------------------------------ the build
@pytest.mark.skipif(PURE_PYTHON, reason="KVCACHE_PURE_PYTHON is set: the accelerator is disabled on purpose")
def test_accelerator_is_built_and_used_by_default() -> None:
    from kvcache.engine.replay import c_toolchain_present

    if load_accelerator() is None and not c_toolchain_present():
        pytest.skip("no C compiler or Python.h here: kvcache runs on its pure-Python pool")
    # The extension is optional at build time (setup.py: optional=True). A build that
    # failed silently would leave replay on the slow path; fail loudly instead.
    seq_cache_type = load_accelerator()
    assert seq_cache_type is not None, "kvcache.engine._seqcache did not import: the C build failed"
    assert seq_cache_type.__module__ == "kvcache.engine._seqcache"
    assert SequentialReplayer(CacheConfig()).implementation == "c"


def test_pure_python_env_disables_the_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVCACHE_PURE_PYTHON", "1")
    assert load_accelerator() is None
    replayer = SequentialReplayer(CacheConfig(num_blocks=4))
    assert (replayer.implementation, replayer.seq_cache) == ("python", None)
    with pytest.raises(RuntimeError):
        SequentialReplayer(CacheConfig(), implementation="c")
    # "0" (or empty) means not set.
    monkeypatch.setenv("KVCACHE_PURE_PYTHON", "0")
    assert load_accelerator() is not None or PURE_PYTHON


# Everything below drives the extension directly. Without it these are skipped,
# and test_accelerator_is_built_and_used_by_default above fails (unless
# KVCACHE_PURE_PYTHON is set), so a broken build cannot pass quietly.
try:
    from kvcache.engine._seqcache import SeqCache
except ImportError:  # pragma: no cover - the build failed
    SeqCache = None

requires_c = pytest.mark.skipif(SeqCache is None, reason="kvcache.engine._seqcache is not built")


def cycle(sc: SeqCache, req: Request, block_size: int) -> int:
    """One request through the C cycle, with the arguments SequentialReplayer passes."""
    kv = req.num_kv_tokens
    return sc.cycle(list(req.block_keys), req.hit_cap_tokens // block_size, -(-kv // block_size), kv // block_size, True)


def holders(cached: dict, duplicates: dict) -> dict:
    """hash -> every block holding it, oldest first."""
    return {h: [b, *duplicates.get(h, ())] for h, b in cached.items()}


# ------------------------------------------------------------------ C vs Python vs naive
TOKENS = st.integers(0, 2)  # a tiny alphabet: prefixes, repeats and duplicates are common


@dataclass(frozen=True)
class Spec:
    keys: tuple  # token ids ("tokens" style) or block ids ("ids" style)
    output: int  # output tokens
    salt: str | None
    prompt_keys_only: bool  # hash-id traces: decode blocks carry no key
    full_cap: bool  # hit cap = whole prompt (hash-id traces) instead of prompt - 1
    trim: int  # "ids" style: tokens missing from the last prompt block


@st.composite
def traces(draw: st.DrawFn, style: str, max_requests: int = 12) -> list[Spec]:
    out: list[Spec] = []
    alphabet = TOKENS if style == "tokens" else st.integers(0, 9)
    for _ in range(draw(st.integers(1, max_requests))):
        kind = draw(st.sampled_from(["new", "next turn", "repeat"])) if out else "new"
        if kind == "repeat":
            # An exact repeat of an earlier prompt (a full hit when the cap allows).
            prev = draw(st.sampled_from(out))
            keys, salt = prev.keys, prev.salt
        elif kind == "next turn":
            # The next turn of an earlier request: its prompt (+ output) + more.
            prev = draw(st.sampled_from(out))
            if style == "tokens":
                keys = prev.keys + (1,) * prev.output + tuple(draw(st.lists(alphabet, max_size=5)))
            else:
                more = draw(st.lists(alphabet, max_size=4, unique=True))
                keys = prev.keys + tuple(k for k in more if k not in prev.keys)
            salt = prev.salt if draw(st.integers(0, 3)) else draw(st.sampled_from([None, "a"]))
        else:
            # Block ids are unique within a request, as in a prefix-chained trace.
            keys = tuple(draw(st.lists(alphabet, min_size=1, max_size=16, unique=style == "ids")))
            salt = draw(st.sampled_from([None, None, "a"]))
        out.append(
            Spec(
                keys[:24],
                draw(st.one_of(st.integers(0, 1), st.integers(0, 9))),
                salt,
                draw(st.integers(0, 2)) == 0,
                draw(st.booleans()),
                draw(st.integers(0, 3)),
            )
        )
    return out


def build(specs: list[Spec], style: str, block_size: int) -> list[Request]:
    reqs = []
    for i, s in enumerate(specs):
        if style == "tokens":
            # Token requests, hashed as the other engine tests do.
            n = len(s.keys)
            keys = hash_token_blocks(list(s.keys) + [1] * s.output, block_size, "xxh3_128", cache_salt=s.salt)
            if s.prompt_keys_only:
                keys = keys[: n // block_size]
        else:
            # Hash-id requests (engine/traces/stream.py): one raw id per prompt block,
            # ("org", id) under a salt, and never-hittable keys for decode blocks.
            n = max(1, len(s.keys) * block_size - min(s.trim, block_size - 1))
            keys = [k if s.salt is None else (s.salt, k) for k in s.keys[: n // block_size]]
            kv = n + max(s.output, 1) - 1
            if not s.prompt_keys_only:
                keys += [("out", i, j) for j in range(len(keys), kv // block_size)]
        cap = n if s.full_cap else n - 1
        reqs.append(Request(str(i), keys, n, n, s.output, cap, org=s.salt))
    return reqs


@requires_c
@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    style=st.sampled_from(["tokens", "tokens", "ids"]),
    block_size=st.sampled_from([1, 2, 4]),
    num_blocks=st.one_of(st.none(), st.integers(2, 10), st.integers(2, 24)),
    free_order=st.sampled_from(["current", "classic"]),
)
def test_seqcache_matches_python_pool_and_naive_oracle(
    data: st.DataObject, style: str, block_size: int, num_blocks: int | None, free_order: str
) -> None:
    reqs = build(data.draw(traces(style)), style, block_size)
    sc = SeqCache(num_blocks, free_order)
    mgr = KVCacheManager(CacheConfig(block_size=block_size, num_blocks=num_blocks, free_order=free_order))
    pool = mgr.pool
    naive = NaivePrefixCache(num_blocks, block_size, free_order)
    seen: set[str] = set()
    for req in reqs:
        n_hit = cycle(sc, req, block_size)
        expected = naive.run(req)
        seen |= {"rejection"} if expected is None else {"no new block"} if not expected[1] else set()
        seen |= {"duplicates"} if sc.duplicates else set()
        # C against the oracle: same rejection, and for a request that runs the
        # same hit and new block ids.
        assert (n_hit < 0) == (expected is None), req
        if expected is not None:
            assert n_hit == len(expected[0])
            assert (sc.last_hits, sc.last_new) == expected, req
        # The same free queue, head first. An unbounded naive model lists only used
        # blocks (C and the Python pool list freed ones), so compare it when bounded.
        queue = sc.free_queue()
        if num_blocks is not None:
            assert queue == naive.free_queue()
            assert sc.num_free_blocks == len(queue) == num_blocks - 1
        # The same map (oldest holder), duplicates (younger holders) and evictions.
        assert sc.cached == {h: next(iter(entry)) for h, entry in naive.map.items()}
        assert holders(sc.cached, sc.duplicates) == {h: list(entry) for h, entry in naive.map.items()}
        assert set(sc.duplicates) <= set(sc.cached) and all(sc.duplicates.values())
        assert sc.num_evicted == naive.num_evicted
        # The Python reference against both.
        assert mgr.run_isolated(req) == expected, req
        assert pool.free_queue() == queue
        assert pool.cached == sc.cached
        assert {h: pool.blocks_for_hash(h) for h in pool.cached} == holders(sc.cached, sc.duplicates)
        assert pool.num_evicted == sc.num_evicted
    # What the example exercised (see pytest --hypothesis-show-statistics).
    for what in sorted(seen | ({"eviction"} if sc.num_evicted else set())):
        event(what)


# ------------------------------------------------------------------ no deduplication
@requires_c
def test_repeat_of_64_token_prompt_keeps_two_copies_and_promotes_the_younger() -> None:
    sc = SeqCache(6)  # 5 usable blocks
    prompt = list(range(64))
    k0, k1, k2, k3 = hash_token_blocks(prompt, 16)

    def run(tokens: list[int]) -> int:
        req = Request("r", hash_token_blocks(tokens, 16), len(tokens), len(tokens), 0, len(tokens) - 1)
        return cycle(sc, req, 16)

    # Step 1: the first run computes and caches 4 blocks [1, 2, 3, 4].
    assert run(prompt) == 0
    assert (sc.last_hits, sc.last_new) == ([], [1, 2, 3, 4])
    assert sc.free_queue() == [5, 4, 3, 2, 1]
    # Step 2: the exact repeat hits 3 blocks (n - 1 cap) and recomputes the 4th into
    # the fresh block 5, which gets the same hash: k3 -> {4, 5}; lookups use 4.
    assert run(prompt) == 3
    assert (sc.last_hits, sc.last_new) == ([1, 2, 3], [5])
    assert sc.cached == {k0: 1, k1: 2, k2: 3, k3: 4}
    assert sc.duplicates == {k3: [5]}
    assert sc.free_queue() == [4, 5, 3, 2, 1]
    assert sc.num_evicted == 0
    # Step 3: an unrelated one-block request pops the head, the older copy 4: the
    # younger copy 5 now answers for k3, and no duplicate is left.
    other = [1000 + i for i in range(16)]
    assert run(other) == 0
    assert (sc.last_hits, sc.last_new) == ([], [4])
    assert sc.num_evicted == 1
    assert sc.cached == {k0: 1, k1: 2, k2: 3, k3: 5, hash_token_blocks(other, 16)[0]: 4}
    assert sc.duplicates == {}
    assert sc.free_queue() == [5, 3, 2, 1, 4]
    # Step 4: a 65-token prompt hits all 4 blocks, through block 5; its partial
    # block reuses 4 (evicting the unrelated block) and goes back to the head.
    assert run([*prompt, 1000]) == 4
    assert (sc.last_hits, sc.last_new) == ([1, 2, 3, 5], [4])
    assert sc.num_evicted == 2
    assert sc.cached == {k0: 1, k1: 2, k2: 3, k3: 5}
    assert sc.free_queue() == [4, 5, 3, 2, 1]


@requires_c
def test_three_copies_promote_the_next_oldest_and_a_younger_eviction_keeps_the_oldest() -> None:
    sc = SeqCache(5)  # 4 usable blocks
    K, X, Y, Z = 0xA1, 0xB1, 0xB2, 0xB3  # stand-in keys
    # Steps 1-3: K is computed three times without a lookup (max_hit 0): blocks 1, 2, 3.
    for new, queue in (([1], [2, 3, 4, 1]), ([2], [3, 4, 1, 2]), ([3], [4, 1, 2, 3])):
        assert sc.cycle([K], 0, 1, 1, True) == 0
        assert (sc.last_new, sc.free_queue()) == (new, queue)
    assert (sc.cached, sc.duplicates) == ({K: 1}, {K: [2, 3]})
    # Step 4: two blocks, one keyed: pops 4 and the oldest copy 1. K passes to the
    # next oldest, 2 (not the youngest, 3). Block 1 is unhashed: back to the head.
    assert sc.cycle([X], 0, 2, 1, True) == 0
    assert sc.last_new == [4, 1]
    assert (sc.cached, sc.duplicates, sc.num_evicted) == ({K: 2, X: 4}, {K: [3]}, 1)
    assert sc.free_queue() == [1, 2, 3, 4]
    # Step 5: a lookup of K hits block 2.
    assert sc.cycle([K, Y], 2, 2, 2, True) == 1
    assert (sc.last_hits, sc.last_new) == ([2], [1])
    assert sc.free_queue() == [3, 4, 1, 2]
    # Step 6: popping the younger copy 3 leaves the older 2 in charge.
    assert sc.cycle([Z], 0, 1, 1, True) == 0
    assert sc.last_new == [3]
    assert (sc.cached, sc.duplicates, sc.num_evicted) == ({K: 2, X: 4, Y: 1, Z: 3}, {}, 2)
    assert sc.free_queue() == [4, 1, 2, 3]


# ------------------------------------------------------------------ key types
@requires_c
def test_tuple_and_128_bit_int_keys() -> None:
    sc = SeqCache(8)
    big = [(1 << 127) + 5, (1 << 127) + 6, (1 << 128) - 1]  # 128-bit ints, as xxh3_128 gives
    # Step 1: a salted hash-id request: ("org", id) keys, blocks [1, 2, 3].
    assert sc.cycle([("org", 5), ("org", 6), ("org", 7)], 3, 3, 3, True) == 0
    assert sc.last_new == [1, 2, 3]
    # Step 2: 128-bit int keys take the fresh [4, 5, 6]. Their low bits equal the
    # plain ints 5 and 6 but they are different keys.
    assert sc.cycle(list(big), 3, 3, 3, True) == 0
    assert sc.last_new == [4, 5, 6]
    assert sc.free_queue() == [7, 3, 2, 1, 6, 5, 4]
    # Step 3: equal but distinct objects hit: rebuilt tuples and ints parsed anew.
    again = [("org", int("5")), ("org", int("6")), ("org", 9)]
    assert all(next(k for k in sc.cached if k == a) is not a for a in again[:2])
    assert sc.cycle(again, 3, 3, 3, True) == 2
    assert (sc.last_hits, sc.last_new) == ([1, 2], [7])
    assert sc.free_queue() == [3, 6, 5, 4, 7, 2, 1]
    assert sc.cycle([int(str(big[0])), int(str(big[1])), 7], 3, 3, 3, True) == 2
    # Step 4: 128-bit ints hit the same way; the missing key 7 takes the head of
    # [3, 6, 7, 2, 1], block 3, evicting ("org", 7).
    assert (sc.last_hits, sc.last_new) == ([4, 5], [3])
    assert sc.num_evicted == 1 and ("org", 7) not in sc.cached
    # Step 5: the plain int 5 (the bare id of ("org", 5), and the low 64 bits of
    # big[0]) hits nothing; it takes the head 6, evicting big[2].
    assert sc.cycle([5], 1, 1, 1, True) == 0
    assert sc.last_new == [6]
    assert sc.num_evicted == 2
    assert sc.cached == {("org", 5): 1, ("org", 6): 2, big[0]: 4, big[1]: 5, ("org", 9): 7, 7: 3, 5: 6}
    assert sc.duplicates == {}
    assert sc.free_queue() == [7, 2, 1, 3, 5, 4, 6]


# ------------------------------------------------------------------ reference counts
class Key:
    """A hashable key that records its death, to find leaked references."""

    alive: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, v: int) -> None:
        self.v = v
        Key.alive.add(self)

    def __hash__(self) -> int:
        return hash(self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.v == self.v


@requires_c
@pytest.mark.parametrize("num_blocks", [6, 40, None])
@pytest.mark.parametrize("free_order", ["current", "classic"])
def test_reference_counts_return_to_start(num_blocks: int | None, free_order: str) -> None:
    # Key objects we own, built at run time so that only this frame refers to them.
    tracked = ("org", int("1" + "0" * 30))
    big = int("1" * 39)  # a 128-bit int
    gc.collect()
    start = sys.getrefcount(tracked), sys.getrefcount(big)
    most = start
    sc = SeqCache(num_blocks, free_order)
    rng = random.Random(7)
    for i in range(3000):
        # Keys unique within a request; across requests they repeat in new objects,
        # so the map, the per-block hashes and the duplicate lists all hold keys.
        ids = rng.sample(range(12), rng.randint(1, 5))
        keys: list = [Key(v) for v in ids]
        if rng.random() < 0.3:
            keys.insert(0, tracked)
        if rng.random() < 0.3:
            keys.append(big)
        total = len(keys) + rng.randint(0, 2)
        sc.cycle(keys, rng.randint(0, len(keys)), total, rng.randint(0, len(keys)), i % 2 == 0)
        most = max(most[0], sys.getrefcount(tracked)), max(most[1], sys.getrefcount(big))
    del keys
    # The run was not trivial, and the cache did hold references to our keys ...
    assert sc.duplicates or sc.num_evicted
    assert most[0] > start[0] and most[1] > start[1]
    view = sc.cached  # a map taken before the cache dies stays usable
    del sc
    gc.collect()
    assert all(isinstance(b, int) for b in view.values())
    del view
    gc.collect()
    # ... and gives every one back.
    assert (sys.getrefcount(tracked), sys.getrefcount(big)) == start
    assert len(Key.alive) == 0


# ------------------------------------------------------------------ bad arguments
@requires_c
@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((1,), ValueError),
        ((0,), ValueError),
        ((-3,), ValueError),
        ((10, "lru"), ValueError),
        ((10, "CURRENT"), ValueError),
        ((2.0,), TypeError),
        (("10",), TypeError),
        ((10, None), TypeError),
    ],
)
def test_bad_constructor_arguments_raise(args: tuple, error: type[Exception]) -> None:
    with pytest.raises(error):
        SeqCache(*args)


@requires_c
def test_smallest_pools_are_accepted() -> None:
    assert SeqCache(2).free_queue() == [1]
    assert SeqCache(2, "classic").num_free_blocks == 1
    assert SeqCache(num_blocks=None, free_order="classic").free_queue() == []


@requires_c
@pytest.mark.parametrize(
    "args",
    [
        ((1, 2), 0, 2, 2),  # keys must be a list
        ("ab", 0, 2, 2),
        (None, 0, 2, 2),
        ([1, 2], "0", 2, 2),  # counts must be ints
        ([1, 2], 0, 2.0, 2),
        ([1, 2], 0, 2),  # missing cache_end
        ([[1], 2], 1, 2, 2),  # an unhashable key, met by the lookup
    ],
)
def test_bad_cycle_arguments_raise_and_change_nothing(args: tuple) -> None:
    sc = SeqCache(6)
    sc.cycle([1, 2], 1, 3, 2, True)
    before = (sc.free_queue(), dict(sc.cached), sc.num_evicted, sc.last_hits, sc.last_new)
    with pytest.raises(TypeError):
        sc.cycle(*args)
    assert (sc.free_queue(), dict(sc.cached), sc.num_evicted, sc.last_hits, sc.last_new) == before
    # Still usable: the repeat hits block 1.
    assert sc.cycle([1, 2, 3], 1, 3, 3, True) == 1


# ------------------------------------------------------------------ in a child process
# Cases that once corrupted the C state, hung or crashed: each runs in a child so
# a regression fails its test instead of taking the test run down with it.
CHILD_MEMORY = 512 << 20


def run_c_steps(num_blocks: int | None, free_order: str, steps: list[tuple], timeout: float = 20) -> list[dict]:
    """Run ``SeqCache.cycle`` steps in a child process (512 MiB, ``timeout`` s).

    Returns one record per step: the hit count, (hit ids, new ids), evictions, the
    map as sorted pairs and the free queue. A crash, hang or memory blow-up fails
    the calling test with the child's last words.
    """
    code = textwrap.dedent(
        """
        import json, resource, sys
        limit, num_blocks, free_order, steps = json.loads(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from kvcache.engine._seqcache import SeqCache
        sc = SeqCache(num_blocks, free_order)
        for keys, max_hit, total, cache_end in steps:
            k = sc.cycle(keys, max_hit, total, cache_end, True)
            rec = {"k": k, "ids": [sc.last_hits, sc.last_new] if k >= 0 else None}
            print(json.dumps(rec), flush=True)
            rec["evicted"] = sc.num_evicted
            rec["cached"] = sorted(sc.cached.items())
            rec["queue"] = sc.free_queue()
            print(json.dumps(rec), flush=True)
        """
    )
    arg = json.dumps([CHILD_MEMORY, num_blocks, free_order, steps])
    try:
        proc = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"SeqCache hung (> {timeout} s); output so far:\n{out[-2000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    if proc.returncode != 0:
        pytest.fail(f"SeqCache child exited {proc.returncode}; output:\n{lines[-2:]}\n{proc.stderr[-2000:]}")
    return lines[1::2]


@requires_c
def test_child_process_harness_reports_a_normal_run() -> None:
    # The control for the tests below: a benign run comes back whole and exact.
    steps = [([1, 2, 3], 0, 4, 3), ([1, 2, 3], 2, 3, 3), ([9], 0, 1, 1)]
    assert run_c_steps(5, "current", steps) == [
        {"k": 0, "ids": [[], [1, 2, 3, 4]], "evicted": 0, "cached": [[1, 1], [2, 2], [3, 3]], "queue": [4, 3, 2, 1]},
        # Hits [1, 2]; block 3 (k3) is recomputed into the head block 4: a duplicate.
        {"k": 2, "ids": [[1, 2], [4]], "evicted": 0, "cached": [[1, 1], [2, 2], [3, 3]], "queue": [3, 4, 2, 1]},
        {"k": 0, "ids": [[], [3]], "evicted": 1, "cached": [[1, 1], [2, 2], [3, 4], [9, 3]], "queue": [4, 2, 1, 3]},
    ]


@requires_c
def test_a_key_repeated_within_one_request_matches_python_and_naive() -> None:
    # Hash-id traces take block keys from the trace as they are, so one request can
    # list the same id twice. Each lookup then returns the same (oldest) block:
    # vLLM touches it twice (ref_cnt 2) and frees it twice; the block must still
    # leave and re-enter the free queue once. Block size 1, 5 usable blocks.
    reqs = [
        Request("a", [7, 7], 2, 2, 1, 1),  # caches 7 in blocks 1 and 2 (a duplicate)
        Request("b", [7, 7, 7], 3, 3, 1, 2),  # hits [1, 1]
        Request("c", [1, 2, 3], 3, 3, 1, 2),
        Request("d", [1, 2, 3, 4], 4, 4, 1, 3),
        Request("e", [9, 8, 7, 6, 5], 5, 5, 1, 4),
    ]
    mgr = KVCacheManager(CacheConfig(block_size=1, num_blocks=6))
    naive = NaivePrefixCache(6, 1)
    expected = []
    for req in reqs:
        ran = mgr.run_isolated(req)
        assert ran == naive.run(req)
        assert mgr.pool.free_queue() == naive.free_queue()
        expected.append(
            {
                "k": -1 if ran is None else len(ran[0]),
                "ids": None if ran is None else list(ran),
                "evicted": mgr.pool.num_evicted,
                "cached": sorted(mgr.pool.cached.items()),
                "queue": mgr.pool.free_queue(),
            }
        )
    # The Python reference, spelled out: b hits [1, 1] and recomputes its last block.
    assert expected[1]["ids"] == [[1, 1], [3]] and expected[1]["queue"] == [4, 5, 2, 3, 1]
    steps = [(list(r.block_keys), r.hit_cap_tokens, r.num_kv_tokens, r.num_kv_tokens) for r in reqs]
    assert run_c_steps(6, "current", steps) == json.loads(json.dumps(expected))


@requires_c
@pytest.mark.parametrize("total", [1 << 40, 1 << 62])
def test_a_request_far_too_large_for_a_bounded_pool_is_rejected(total: int) -> None:
    # A trace line with an absurd output_length must be rejected (-1, nothing
    # changes), as the Python pool does, not exhaust memory or loop.
    req = Request("huge", [11], 16, 16, total * 16 - 15, 15)
    mgr = KVCacheManager(CacheConfig(block_size=16, num_blocks=10))
    assert -(-req.num_kv_tokens // 16) == total
    assert mgr.run_isolated(req) is None
    got = run_c_steps(10, "current", [([11], 0, total, 1), ([11, 12], 1, 2, 2)], timeout=3)
    assert got[0] == {"k": -1, "ids": None, "evicted": 0, "cached": [], "queue": list(range(1, 10))}
    assert got[1]["ids"] == [[], [1, 2]]


@requires_c
def test_an_uninitialised_instance_raises_instead_of_crashing() -> None:
    # SeqCache.__new__ without __init__ (as copy/pickle helpers or subclasses may
    # do) must not dereference missing state.
    code = textwrap.dedent(
        """
        from kvcache.engine._seqcache import SeqCache
        for use in (lambda s: s.free_queue(), lambda s: s.cycle([1], 1, 1, 1), lambda s: s.cached,
                    lambda s: s.duplicates, lambda s: s.num_free_blocks):
            try:
                use(SeqCache.__new__(SeqCache))
            except Exception:
                pass
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr[-2000:]
