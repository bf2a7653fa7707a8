"""Property tests: pool invariants after every step of random replays.

Prompts are drawn from a two-token alphabet with tiny blocks, and some requests
continue an earlier one (its prompt + output + more), so prefixes, decode-block
hits, duplicates and evictions are all common. Both free orders are exercised.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache.engine import block_pool as block_pool_module
from kvcache.engine.block_pool import NULL_BLOCK_ID, BlockPool
from kvcache.engine.config import CacheConfig
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.naive import NaivePrefixCache
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.request import Request

SETTINGS = settings(max_examples=100, deadline=None)


def eager_compaction(on: bool) -> contextlib.AbstractContextManager:
    """Make the pool compact its tail log on every free, when it has one.

    Compaction normally waits for thousands of dead log entries, which these small
    cases never reach; forcing it checks that it preserves the queue exactly.
    """
    if on and hasattr(block_pool_module, "_COMPACT_SLACK"):
        return mock.patch.object(block_pool_module, "_COMPACT_SLACK", 0)
    return contextlib.nullcontext()


TOKENS = st.integers(0, 1)  # a two-token alphabet: prefixes are shared all the time


@dataclass(frozen=True)
class Spec:
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    salt: str | None
    # Like a hash-id trace: only the prompt's full blocks have keys, so decode
    # blocks are computed but never cached (several unhashed blocks per request).
    prompt_keys_only: bool = False


@st.composite
def specs(draw: st.DrawFn, max_requests: int = 10) -> list[Spec]:
    out: list[Spec] = []
    for _ in range(draw(st.integers(1, max_requests))):
        if out and draw(st.booleans()):
            # Next turn of an earlier conversation: its prompt + output + new text.
            prev = draw(st.sampled_from(out))
            prompt = prev.prompt + prev.output + tuple(draw(st.lists(TOKENS, max_size=5)))
            salt = prev.salt if draw(st.integers(0, 3)) else draw(st.sampled_from([None, "a"]))
        else:
            prompt = tuple(draw(st.lists(TOKENS, min_size=1, max_size=16)))
            salt = draw(st.sampled_from([None, None, "a"]))
        output = tuple(draw(st.lists(TOKENS, max_size=8)))
        out.append(Spec(prompt[:40], output, salt, draw(st.integers(0, 4)) == 0))
    return out


def build(specs_: list[Spec], block_size: int, algo: str = "xxh3_128") -> list[Request]:
    reqs = []
    for i, s in enumerate(specs_):
        keys = hash_token_blocks(list(s.prompt + s.output), block_size, algo, cache_salt=s.salt)
        n = len(s.prompt)
        if s.prompt_keys_only:
            keys = keys[: n // block_size]
        reqs.append(Request(str(i), keys, n, n, len(s.output), n - 1, org=s.salt))
    return reqs


def block_ids(pool: BlockPool) -> range:
    # Bounded: every usable block. Unbounded: the ids allocated so far.
    return range(1, pool.num_blocks if pool.num_blocks is not None else len(pool.ref_cnt))


def check_pool(pool: BlockPool) -> None:
    queue = pool.free_queue()
    in_queue = set(queue)
    assert len(queue) == len(in_queue), f"duplicate in free queue {queue}"
    assert NULL_BLOCK_ID not in in_queue
    assert pool.ref_cnt[NULL_BLOCK_ID] == 1
    for b in block_ids(pool):
        assert (b in in_queue) == (pool.ref_cnt[b] == 0), f"block {b}: ref {pool.ref_cnt[b]}, queue {queue}"
        assert pool.ref_cnt[b] >= 0
    assert in_queue <= set(block_ids(pool))
    if pool.num_blocks is not None:
        assert pool.num_free_blocks == len(queue)
    else:
        assert pool.num_evicted == 0
    # The hash map points only at blocks carrying that hash (the oldest first,
    # then younger duplicates: no dedup) ...
    holders: dict[int, object] = {}
    for h, first in pool.cached.items():
        ids = pool.blocks_for_hash(h)
        assert ids and ids[0] == first == pool.get_cached_block(h)
        assert len(ids) == len(set(ids))
        for b in ids:
            assert pool.block_hash[b] == h, f"map {h} -> {b}, block has {pool.block_hash[b]}"
            assert b not in holders
            holders[b] = h
    # ... and every hashed block is reachable from the map.
    hashed = {b: h for b, h in enumerate(pool.block_hash) if h is not None}
    assert hashed == holders
    assert pool.cached_hashes() == len(pool.cached)


def check_manager(mgr: KVCacheManager, active: dict[str, Request]) -> None:
    pool = mgr.pool
    check_pool(pool)
    assert set(mgr.req_to_blocks) == set(active)
    held = Counter(b for rid in active for b in mgr.req_to_blocks[rid])
    for b in block_ids(pool):
        assert pool.ref_cnt[b] == held[b], f"block {b}: ref {pool.ref_cnt[b]}, held {held[b]}"
    for rid, req in active.items():
        blocks = mgr.req_to_blocks[rid]
        assert len(blocks) == len(set(blocks))
        n_cached = mgr.num_cached_blocks[rid]
        # Cached blocks are full blocks of the request's own chain.
        assert n_cached <= min(req.num_kv_tokens // mgr.block_size, len(req.block_keys))
        for i in range(n_cached):
            assert pool.block_hash[blocks[i]] == req.block_keys[i]


def check_lookup(mgr: KVCacheManager, req: Request, hits: list[int], n_hit: int) -> None:
    bs = mgr.block_size
    assert n_hit == len(hits) * bs
    assert n_hit % bs == 0 and n_hit <= req.prompt_tokens - 1
    for i, b in enumerate(hits):
        assert mgr.pool.block_hash[b] == req.block_keys[i]


def replayer_blocks_for_hash(replayer: SequentialReplayer) -> dict[object, list[int]]:
    """hash -> every block holding it, oldest first, read from either implementation."""
    if replayer.seq_cache is not None:
        dups = replayer.seq_cache.duplicates
        return {h: [b, *dups.get(h, ())] for h, b in replayer.cached.items()}
    pool = replayer.manager.pool  # type: ignore[union-attr]
    return {h: pool.blocks_for_hash(h) for h in pool.cached}


def check_replayer(replayer: SequentialReplayer, num_blocks: int | None) -> None:
    """Invariants visible through any replayer between requests: every block is free."""
    queue = replayer.free_queue()
    assert len(queue) == len(set(queue)), f"duplicate in free queue {queue}"
    assert NULL_BLOCK_ID not in queue
    if num_blocks is not None:
        assert sorted(queue) == list(range(1, num_blocks))
    else:
        assert replayer.stats.evicted_blocks == 0
    # Each cached block holds one hash, and is free, so it sits in the queue.
    held = [b for ids in replayer_blocks_for_hash(replayer).values() for b in ids]
    assert len(held) == len(set(held))
    assert set(held) <= set(queue)
    assert replayer.stats.peak_cached_blocks >= len(replayer.cached)
    if replayer.manager is not None:
        check_manager(replayer.manager, {})


# ------------------------------------------------------------------ sequential replay
@SETTINGS
@given(
    trace=specs(),
    block_size=st.sampled_from([2, 4]),
    num_blocks=st.integers(2, 14),
    free_order=st.sampled_from(["current", "classic"]),
)
def test_sequential_replay_invariants_and_capacity_monotonicity(
    trace: list[Spec], block_size: int, num_blocks: int, free_order: str, implementation: str
) -> None:
    finite = SequentialReplayer(
        CacheConfig(block_size=block_size, num_blocks=num_blocks, free_order=free_order), implementation
    )
    unbounded = SequentialReplayer(
        CacheConfig(block_size=block_size, num_blocks=None, free_order=free_order), implementation
    )
    f_results, u_results = [], []
    for replayer, results, limit in ((finite, f_results, num_blocks), (unbounded, u_results, None)):
        assert replayer.implementation == implementation
        reqs = build(trace, block_size)
        for req, res in zip(reqs, replayer.run(reqs)):
            # After every request: all blocks are free again and the pool is consistent.
            check_replayer(replayer, limit)
            assert res.cached_tokens % block_size == 0
            assert res.cached_tokens <= req.prompt_tokens - 1
            assert res.hit_blocks * block_size == res.cached_tokens
            assert res.blocks == req.prompt_tokens // block_size
            fits = limit is None or -(-req.num_kv_tokens // block_size) <= limit - 1
            assert res.rejected == (not fits)
            results.append(res)
    assert unbounded.stats.evicted_blocks == 0
    assert finite.stats.rejected_requests == sum(f.rejected for f in f_results)
    assert unbounded.stats.rejected_requests == 0
    # Per request, not just in total: an unbounded pool never evicts, so before each
    # request its map holds every key ever cached, a superset of the finite pool's
    # keys (both replays insert the same keys; only the finite one evicts or rejects).
    # A lookup is the longest run of present keys under the same cap, so LRU cannot
    # give the finite pool a hit the unbounded one lacks. The total follows.
    for f, u in zip(f_results, u_results):
        assert f.cached_tokens <= u.cached_tokens, (f, u)
    assert sum(f.cached_tokens for f in f_results) <= sum(u.cached_tokens for u in u_results)
    # And when the finite pool never evicted or rejected, it holds the same keys: equal hits.
    if finite.stats.evicted_blocks == 0 and not any(f.rejected for f in f_results):
        assert [f.cached_tokens for f in f_results] == [u.cached_tokens for u in u_results]


@settings(max_examples=50, deadline=None)
@given(
    trace=specs(),
    block_size=st.sampled_from([2, 4]),
    num_blocks=st.one_of(st.none(), st.integers(2, 10)),
    free_order=st.sampled_from(["current", "classic"]),
)
def test_hash_algorithm_does_not_change_results(
    trace: list[Spec], block_size: int, num_blocks: int | None, free_order: str, implementation: str
) -> None:
    got = []
    for algo in ("xxh3_128", "sha256"):
        replayer = SequentialReplayer(
            CacheConfig(block_size=block_size, num_blocks=num_blocks, hash_algo=algo, free_order=free_order),
            implementation,
        )
        steps = []
        for r in replayer.run(build(trace, block_size, algo)):
            # Same hits, and the same blocks free in the same order, after every request.
            steps.append((r.cached_tokens, r.rejected, replayer.free_queue(), replayer.stats.evicted_blocks))
        got.append((steps, replayer.stats))
    assert got[0] == got[1]


# ------------------------------------------------------------------ fused path vs plain paths
def pool_state(pool: BlockPool) -> tuple:
    return (
        pool.free_queue() if pool.num_blocks is not None else None,
        {h: pool.blocks_for_hash(h) for h in pool.cached},
        pool.num_evicted,
    )


@SETTINGS
@given(
    trace=specs(),
    block_size=st.sampled_from([2, 4]),
    num_blocks=st.one_of(st.none(), st.integers(2, 14)),
    free_order=st.sampled_from(["current", "classic"]),
    enable_caching=st.sampled_from([True, True, True, False]),
    compact=st.booleans(),
)
def test_replayer_matches_manager_steps_and_naive_oracle(
    trace: list[Spec],
    block_size: int,
    num_blocks: int | None,
    free_order: str,
    enable_caching: bool,
    compact: bool,
    implementation: str,
) -> None:
    with eager_compaction(compact):
        _replayer_matches_manager_steps_and_naive_oracle(
            trace, block_size, num_blocks, free_order, enable_caching, implementation
        )


def _replayer_matches_manager_steps_and_naive_oracle(
    trace: list[Spec],
    block_size: int,
    num_blocks: int | None,
    free_order: str,
    enable_caching: bool,
    implementation: str,
) -> None:
    # The replayer's one-request cycle (fused Python, or C) must do exactly what
    # the plain lookup / allocate_slots / free steps do, and (with caching on) what
    # the naive oracle does: same hits, free-queue order, hash map, evictions.
    cfg = CacheConfig(
        block_size=block_size, num_blocks=num_blocks, free_order=free_order, enable_caching=enable_caching
    )
    replayer = SequentialReplayer(cfg, implementation)
    assert replayer.implementation == implementation
    stepped = KVCacheManager(cfg)
    oracle = NaivePrefixCache(num_blocks, block_size, free_order)
    reqs, oracle_reqs = build(trace, block_size), build(trace, block_size)
    for res, req, req_oracle in zip(replayer.run(build(trace, block_size)), reqs, oracle_reqs):
        hits, n_hit = stepped.get_computed_blocks(req)
        new = stepped.allocate_slots(req, req.num_kv_tokens - n_hit, hits, n_hit)
        stepped.free(req)
        assert (new is None) == res.rejected
        if new is None:
            assert (res.hit_blocks, res.cached_tokens) == (0, 0)
        else:
            assert (res.hit_blocks, res.cached_tokens) == (len(hits), n_hit)
        # Both list the head group and the tail (and, when bounded, the fresh range).
        assert replayer.free_queue() == stepped.pool.free_queue()
        assert replayer_blocks_for_hash(replayer) == {h: stepped.pool.blocks_for_hash(h) for h in stepped.pool.cached}
        assert replayer.stats.evicted_blocks == stepped.pool.num_evicted
        if replayer.manager is not None:
            assert pool_state(replayer.manager.pool) == pool_state(stepped.pool)
            check_pool(replayer.manager.pool)
        if not enable_caching:
            assert res.cached_tokens == 0 and replayer.cached == {}
            continue
        expected = oracle.run(req_oracle)
        assert (expected is None) == res.rejected
        if expected is not None:
            assert (hits, new) == expected
        if num_blocks is not None:
            assert replayer.free_queue() == oracle.free_queue()
        assert replayer_blocks_for_hash(replayer) == {h: list(entry) for h, entry in oracle.map.items()}
        assert replayer.stats.evicted_blocks == oracle.num_evicted


# ------------------------------------------------------------------ concurrent requests
@st.composite
def ops(draw: st.DrawFn) -> list[tuple[str, int]]:
    kinds = st.sampled_from(["start", "start", "decode", "decode", "free"])
    return draw(st.lists(st.tuples(kinds, st.integers(0, 1_000)), min_size=1, max_size=30))


@SETTINGS
@given(
    trace=specs(max_requests=8),
    steps=ops(),
    block_size=st.sampled_from([2, 4]),
    num_blocks=st.one_of(st.none(), st.integers(2, 16)),
    free_order=st.sampled_from(["current", "classic"]),
    compact=st.booleans(),
)
def test_invariants_hold_with_overlapping_requests(
    trace: list[Spec],
    steps: list[tuple[str, int]],
    block_size: int,
    num_blocks: int | None,
    free_order: str,
    compact: bool,
) -> None:
    with eager_compaction(compact):
        _invariants_hold_with_overlapping_requests(trace, steps, block_size, num_blocks, free_order)


def _invariants_hold_with_overlapping_requests(
    trace: list[Spec], steps: list[tuple[str, int]], block_size: int, num_blocks: int | None, free_order: str
) -> None:
    mgr = KVCacheManager(CacheConfig(block_size=block_size, num_blocks=num_blocks, free_order=free_order))
    pool = mgr.pool
    active: dict[str, Request] = {}
    started = 0
    for kind, pick in steps:
        if kind == "start":
            # Admit a fresh copy of a request: look up, allocate the prompt.
            spec = trace[pick % len(trace)]
            req = build([spec], block_size)[0]
            req.request_id = f"r{started}"
            started += 1
            hits, n_hit = mgr.get_computed_blocks(req)
            check_lookup(mgr, req, hits, n_hit)
            before = (list(pool.ref_cnt), pool.free_queue(), dict(pool.cached), pool.num_evicted)
            new = mgr.allocate_slots(req, req.kv_prompt_tokens - n_hit, hits, n_hit)
            if new is None:
                assert (list(pool.ref_cnt), pool.free_queue(), dict(pool.cached), pool.num_evicted) == before
                mgr.free(req)
            else:
                req.num_computed_tokens += req.kv_prompt_tokens - n_hit
                # Hits are still owned by this request, never evicted by its own pops.
                assert mgr.req_to_blocks[req.request_id][: len(hits)] == hits
                for i, b in enumerate(hits):
                    assert pool.block_hash[b] == req.block_keys[i]
                active[req.request_id] = req
        elif kind == "decode" and active:
            rid = sorted(active)[pick % len(active)]
            req = active[rid]
            if req.num_computed_tokens < req.num_kv_tokens:
                before = (list(pool.ref_cnt), pool.free_queue(), dict(pool.cached), pool.num_evicted)
                if mgr.allocate_slots(req, 1) is None:
                    assert (list(pool.ref_cnt), pool.free_queue(), dict(pool.cached), pool.num_evicted) == before
                else:
                    req.num_computed_tokens += 1
        elif kind == "free" and active:
            rid = sorted(active)[pick % len(active)]
            mgr.free(active.pop(rid))
        check_manager(mgr, active)
    for rid in sorted(active):
        mgr.free(active.pop(rid))
    check_manager(mgr, {})
    if num_blocks is not None:
        assert sorted(pool.free_queue()) == list(range(1, num_blocks))


# ------------------------------------------------------------------ pool vs a naive model
class NaivePool:
    """vLLM's free queue written the obvious way: one list, head first."""

    def __init__(self, num_blocks: int, free_order: str) -> None:
        self.free_order = free_order
        self.queue = list(range(1, num_blocks))
        self.ref = [1] + [0] * (num_blocks - 1)
        self.block_hash: list[object] = [None] * num_blocks
        self.map: dict[object, list[int]] = {}  # hash -> blocks, oldest first
        self.evicted = 0

    def get_new_blocks(self, n: int) -> list[int]:
        out, self.queue = self.queue[:n], self.queue[n:]
        for b in out:
            h = self.block_hash[b]
            if h is not None:
                self.map[h].remove(b)
                if not self.map[h]:
                    del self.map[h]
                self.block_hash[b] = None
                self.evicted += 1
            self.ref[b] = 1
        return out

    def cache_blocks(self, blocks: list[int], hashes: list[object]) -> None:
        for b, h in zip(blocks, hashes):
            self.block_hash[b] = h
            self.map.setdefault(h, []).append(b)

    def touch(self, blocks: list[int]) -> None:
        for b in blocks:
            if self.ref[b] == 0:
                self.queue.remove(b)
            self.ref[b] += 1

    def free_blocks(self, blocks: list[int]) -> None:
        to_head, to_tail = [], []
        for b in blocks:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if self.block_hash[b] is None and self.free_order == "current":
                    to_head.append(b)
                else:
                    to_tail.append(b)
        self.queue = to_head + self.queue + to_tail

    def reset_prefix_cache(self) -> bool:
        if any(self.ref[1:]):
            return False
        self.map.clear()
        self.block_hash = [None] * len(self.block_hash)
        return True


@SETTINGS
@given(
    data=st.data(),
    num_blocks=st.integers(2, 10),
    free_order=st.sampled_from(["current", "classic"]),
    compact=st.booleans(),
)
def test_block_pool_matches_a_naive_free_queue(
    data: st.DataObject, num_blocks: int, free_order: str, compact: bool
) -> None:
    with eager_compaction(compact):
        _block_pool_matches_a_naive_free_queue(data, num_blocks, free_order)


def _block_pool_matches_a_naive_free_queue(data: st.DataObject, num_blocks: int, free_order: str) -> None:
    pool, model = BlockPool(num_blocks, free_order), NaivePool(num_blocks, free_order)
    owners: list[list[int]] = []  # each owner holds one reference on each of its blocks
    hashes = st.integers(0, 3)  # few distinct hashes, so duplicates are common
    for _ in range(data.draw(st.integers(1, 40))):
        op = data.draw(st.sampled_from(["alloc", "cache", "touch", "free", "reset"]))
        if op == "alloc":
            n = data.draw(st.integers(1, 3))
            if n <= len(model.queue):
                got = pool.get_new_blocks(n)
                assert got == model.get_new_blocks(n)
                owners.append(got)
        elif op == "cache" and owners:
            blocks = data.draw(st.sampled_from(owners))
            todo = [b for b in blocks if model.block_hash[b] is None]
            if todo:
                hs = [data.draw(hashes) for _ in todo]
                pool.cache_blocks(todo, hs)
                model.cache_blocks(todo, hs)
        elif op == "touch" and model.map:
            hs = data.draw(st.lists(st.sampled_from(sorted(model.map)), min_size=1, max_size=3, unique=True))
            blocks = [model.map[h][0] for h in hs]  # a hit takes the oldest holder
            assert [pool.get_cached_block(h) for h in hs] == blocks
            pool.touch(blocks)
            model.touch(blocks)
            owners.append(blocks)
        elif op == "free" and owners:
            blocks = owners.pop(data.draw(st.integers(0, len(owners) - 1)))
            pool.free_blocks(list(reversed(blocks)))
            model.free_blocks(list(reversed(blocks)))
        elif op == "reset":
            assert pool.reset_prefix_cache() == model.reset_prefix_cache()
        # Same queue, ref counts, hashes, map and eviction count as the naive model.
        assert pool.free_queue() == model.queue
        assert pool.num_free_blocks == len(model.queue)
        assert pool.ref_cnt == model.ref
        assert pool.block_hash == model.block_hash
        assert {h: pool.blocks_for_hash(h) for h in pool.cached} == model.map
        assert pool.num_evicted == model.evicted
        check_pool(pool)
