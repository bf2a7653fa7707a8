"""BlockPool: ref counts, the hash-to-block map and the LRU free queue.

In the style of vLLM's tests/v1/core/test_prefix_caching.py: a tiny pool, each
step narrated, and after each step the exact block ids, ref counts and the whole
free-queue order (head first).
"""

from __future__ import annotations

import pytest

from kvcache.engine.block_pool import NULL_BLOCK_ID, BlockPool

# Stand-in hashes: the pool never looks inside them.
H1, H2, H3, H4 = 0xA1, 0xA2, 0xA3, 0xA4


def refs(pool: BlockPool) -> list[int]:
    return list(pool.ref_cnt)


def assert_consistent(pool: BlockPool) -> None:
    queue = pool.free_queue()
    assert len(queue) == len(set(queue))
    assert NULL_BLOCK_ID not in queue
    assert pool.num_free_blocks == len(queue)
    for b in range(1, pool.num_blocks):
        assert (b in queue) == (pool.ref_cnt[b] == 0), f"block {b}"


# ------------------------------------------------------------------ basics
def test_initial_free_queue_excludes_null_block() -> None:
    pool = BlockPool(10)
    assert pool.free_queue() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert pool.num_free_blocks == 9
    assert refs(pool) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # null block is held forever
    assert pool.cached == {}
    assert pool.num_evicted == 0


def test_allocation_pops_the_head() -> None:
    pool = BlockPool(10)
    assert pool.get_new_blocks(3) == [1, 2, 3]
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9]
    assert refs(pool) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert pool.get_new_blocks(2) == [4, 5]
    assert pool.free_queue() == [6, 7, 8, 9]
    assert pool.num_free_blocks == 4
    assert_consistent(pool)


def test_get_new_blocks_refuses_more_than_free() -> None:
    pool = BlockPool(4)
    pool.get_new_blocks(2)
    with pytest.raises(ValueError):
        pool.get_new_blocks(2)
    # Nothing was taken by the failed call.
    assert pool.free_queue() == [3]
    assert refs(pool) == [1, 1, 1, 0]
    assert pool.get_new_blocks(1) == [3]
    assert pool.free_queue() == []
    assert pool.num_free_blocks == 0


def test_free_enqueues_only_at_ref_cnt_zero() -> None:
    pool = BlockPool(6)
    # Step 1: take [1, 2] and cache them; a second holder touches both.
    pool.get_new_blocks(2)
    pool.cache_blocks([1, 2], [H1, H2])
    pool.touch([1, 2])
    assert refs(pool) == [1, 2, 2, 0, 0, 0]
    assert pool.free_queue() == [3, 4, 5]
    # Step 2: the first holder frees (tail first): still held, not queued.
    pool.free_blocks([2, 1])
    assert refs(pool) == [1, 1, 1, 0, 0, 0]
    assert pool.free_queue() == [3, 4, 5]
    # Step 3: the second holder frees: now both are eviction candidates.
    pool.free_blocks([2, 1])
    assert refs(pool) == [1, 0, 0, 0, 0, 0]
    assert pool.free_queue() == [3, 4, 5, 2, 1]
    assert_consistent(pool)


def test_freeing_more_than_taken_is_an_internal_error() -> None:
    pool = BlockPool(4)
    pool.get_new_blocks(1)
    pool.free_blocks([1])
    with pytest.raises(AssertionError):
        pool.free_blocks([1])


# ------------------------------------------------------------------ free order
@pytest.mark.parametrize(
    ("free_order", "expected"),
    [
        ("current", [3, 4, 5, 6, 7, 8, 9, 2, 1]),
        ("classic", [4, 5, 6, 7, 8, 9, 3, 2, 1]),
    ],
)
def test_reference_free_order_example(free_order: str, expected: list[int]) -> None:
    # A request holds [1 hashed, 2 hashed, 3 partial]; the queue is [4..9].
    pool = BlockPool(10, free_order)
    assert pool.get_new_blocks(3) == [1, 2, 3]
    pool.cache_blocks([1, 2], [H1, H2])
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9]
    # Freed tail first: current vLLM puts the unhashed block 3 at the head and the
    # hashed 2, 1 at the tail; classic vLLM appends all three to the tail.
    pool.free_blocks([3, 2, 1])
    assert pool.free_queue() == expected
    assert refs(pool) == [1] + [0] * 9
    # Freeing keeps hashes: blocks 1 and 2 stay hittable.
    assert pool.get_cached_block(H1) == 1
    assert pool.get_cached_block(H2) == 2
    assert pool.block_hash[3] is None
    assert_consistent(pool)


@pytest.mark.parametrize(
    ("free_order", "expected"),
    [
        # vLLM's prepend_n keeps the group's order: the first freed ends at the head.
        ("current", [5, 4, 3, 6, 7, 8, 9, 2, 1]),
        ("classic", [6, 7, 8, 9, 5, 4, 3, 2, 1]),
    ],
)
def test_several_unhashed_blocks_freed_together(free_order: str, expected: list[int]) -> None:
    pool = BlockPool(10, free_order)
    pool.get_new_blocks(5)
    pool.cache_blocks([1, 2], [H1, H2])
    pool.free_blocks([5, 4, 3, 2, 1])
    assert pool.free_queue() == expected
    assert_consistent(pool)


def test_later_unhashed_frees_go_in_front_of_earlier_ones() -> None:
    pool = BlockPool(8, "current")
    a = pool.get_new_blocks(2)  # [1, 2]
    b = pool.get_new_blocks(2)  # [3, 4]
    pool.cache_blocks([3], [H3])
    assert (a, b) == ([1, 2], [3, 4])
    # Step 1: free a (both unhashed): prepended -> [2, 1, 5, 6, 7].
    pool.free_blocks(reversed(a))
    assert pool.free_queue() == [2, 1, 5, 6, 7]
    # Step 2: free b: the unhashed 4 goes in front of everything, hashed 3 to the tail.
    pool.free_blocks(reversed(b))
    assert pool.free_queue() == [4, 2, 1, 5, 6, 7, 3]
    # Step 3: allocation reuses the unhashed blocks first (LIFO), then fresh ones,
    # and evicts the cached block 3 last.
    assert pool.get_new_blocks(6) == [4, 2, 1, 5, 6, 7]
    assert pool.num_evicted == 0
    assert pool.get_new_blocks(1) == [3]
    assert pool.num_evicted == 1
    assert pool.cached == {}
    assert_consistent(pool)


@pytest.mark.parametrize(
    ("free_order", "queue"),
    [("current", [3, 2, 4, 5, 1]), ("classic", [4, 5, 3, 2, 1])],
)
def test_cycle_isolated_with_no_new_block_leaves_the_queue_alone(free_order: str, queue: list[int]) -> None:
    # With the hit cap at the whole prompt (hash-id traces, --hit-cap none) and at
    # most one output token, a repeat hits every block it needs: nothing is popped.
    pool = BlockPool(6, free_order)
    # Step 1: one keyed prompt block and two decode blocks without keys: [1, 2, 3].
    assert pool.cycle_isolated([], 3, [H1]) == [1, 2, 3]
    # Current order: the unhashed 3, 2 are the head group; classic: all to the tail.
    assert pool.free_queue() == queue
    # Step 2: the repeat hits block 1 and needs no new block. The head group must
    # neither be reported as new blocks nor come back in another order.
    assert pool.cycle_isolated([1], 0, []) == []
    assert pool.free_queue() == queue
    assert pool.cached == {H1: 1}
    assert pool.num_evicted == 0
    assert_consistent(pool)


# ------------------------------------------------------------------ eviction
@pytest.mark.parametrize("free_order", ["current", "classic"])
def test_eviction_is_lru_and_deeper_blocks_go_first(free_order: str) -> None:
    pool = BlockPool(6, free_order)
    # Step 1: request A caches a 2-block chain [1, 2]; request B caches [3, 4].
    pool.get_new_blocks(4)
    pool.cache_blocks([1, 2, 3, 4], [H1, H2, H3, H4])
    # Step 2: A finishes first, then B; each frees tail first.
    pool.free_blocks([2, 1])
    pool.free_blocks([4, 3])
    assert pool.free_queue() == [5, 2, 1, 4, 3]
    # Step 3: the never-used block 5 goes first, with no eviction.
    assert pool.get_new_blocks(1) == [5]
    assert pool.num_evicted == 0
    # Step 4: then A's deeper block 2 (least recently freed, deepest first).
    assert pool.get_new_blocks(1) == [2]
    assert pool.num_evicted == 1
    assert pool.get_cached_block(H2) is None
    assert pool.block_hash[2] is None
    assert pool.get_cached_block(H1) == 1  # the shallower block survives
    assert pool.free_queue() == [1, 4, 3]
    # Step 5: then A's block 1, then B's deeper block 4.
    assert pool.get_new_blocks(2) == [1, 4]
    assert pool.num_evicted == 3
    assert pool.cached == {H3: 3}
    assert pool.free_queue() == [3]
    assert refs(pool) == [1, 1, 1, 0, 1, 1]
    assert_consistent(pool)


def test_touch_takes_a_free_hit_out_of_the_queue() -> None:
    pool = BlockPool(6)
    pool.get_new_blocks(3)
    pool.cache_blocks([1, 2], [H1, H2])
    pool.free_blocks([3, 2, 1])
    assert pool.free_queue() == [3, 4, 5, 2, 1]
    # A hit on the freed block 1: ref_cnt 0 -> 1 and it leaves the queue.
    pool.touch([1])
    assert refs(pool) == [1, 1, 0, 0, 0, 0]
    assert pool.free_queue() == [3, 4, 5, 2]
    # A second hit on the (now held) block 1: ref_cnt 1 -> 2, queue unchanged.
    pool.touch([1])
    assert refs(pool) == [1, 2, 0, 0, 0, 0]
    assert pool.free_queue() == [3, 4, 5, 2]
    # Releasing both references puts it back at the tail (most recently used).
    pool.free_blocks([1])
    pool.free_blocks([1])
    assert pool.free_queue() == [3, 4, 5, 2, 1]
    pool.touch([2, 1])
    assert pool.free_queue() == [3, 4, 5]
    pool.free_blocks([2, 1])
    assert pool.free_queue() == [3, 4, 5, 2, 1]
    assert pool.num_evicted == 0
    assert_consistent(pool)


def test_no_dedup_one_hash_two_blocks() -> None:
    pool = BlockPool(6)
    # Step 1: two blocks computed with the same content both get the hash.
    pool.get_new_blocks(2)
    pool.cache_blocks([1], [H1])
    pool.cache_blocks([2], [H1])
    assert pool.block_hash[1] == pool.block_hash[2] == H1
    assert pool.get_cached_block(H1) == 1  # the older one
    assert pool.blocks_for_hash(H1) == [1, 2]
    assert pool.cached_hashes() == 1
    # Step 2: free both (block 2 first): queue [3, 4, 5, 2, 1].
    pool.free_blocks([2, 1])
    assert pool.free_queue() == [3, 4, 5, 2, 1]
    # Step 3: popping block 2 evicts only block 2's copy; 1 still answers.
    assert pool.get_new_blocks(4) == [3, 4, 5, 2]
    assert pool.num_evicted == 1
    assert pool.get_cached_block(H1) == 1
    assert pool.block_hash[1] == H1 and pool.block_hash[2] is None
    # Step 4: popping block 1 removes the hash altogether.
    assert pool.get_new_blocks(1) == [1]
    assert pool.num_evicted == 2
    assert pool.get_cached_block(H1) is None
    assert pool.cached == {}


def test_no_dedup_evicting_the_older_copy_leaves_the_newer() -> None:
    pool = BlockPool(4)
    pool.get_new_blocks(2)
    pool.cache_blocks([1, 2], [H1, H1])
    assert pool.get_cached_block(H1) == 1
    pool.free_blocks([1])  # 1 before 2 in the LRU
    pool.free_blocks([2])
    assert pool.free_queue() == [3, 1, 2]
    assert pool.get_new_blocks(2) == [3, 1]
    assert pool.num_evicted == 1
    assert pool.get_cached_block(H1) == 2
    assert pool.block_hash[2] == H1


def test_no_dedup_three_copies_promote_the_next_oldest() -> None:
    pool = BlockPool(6)
    pool.get_new_blocks(3)
    # Blocks 1, 2, 3 are computed in that order with the same content.
    pool.cache_blocks([1], [H1])
    pool.cache_blocks([2], [H1])
    pool.cache_blocks([3], [H1])
    assert pool.blocks_for_hash(H1) == [1, 2, 3]
    pool.free_blocks([1])
    pool.free_blocks([3])
    pool.free_blocks([2])
    assert pool.free_queue() == [4, 5, 1, 3, 2]
    # Popping the oldest copy hands the hash to the next oldest, 2 (not 3).
    assert pool.get_new_blocks(3) == [4, 5, 1]
    assert pool.get_cached_block(H1) == 2
    assert pool.blocks_for_hash(H1) == [2, 3]
    # Popping 3 (a younger copy) leaves 2 in charge.
    assert pool.get_new_blocks(1) == [3]
    assert pool.blocks_for_hash(H1) == [2]
    assert pool.num_evicted == 2


# ------------------------------------------------------------------ reset
def test_reset_prefix_cache_only_when_everything_is_free() -> None:
    pool = BlockPool(5)
    pool.get_new_blocks(2)
    pool.cache_blocks([1, 2], [H1, H2])
    pool.free_blocks([2])
    # Block 1 is still held: the reset is refused and nothing is forgotten.
    assert pool.reset_prefix_cache() is False
    assert pool.cached == {H1: 1, H2: 2}
    assert pool.block_hash[2] == H2
    # Everything free: the reset forgets every hash but keeps the queue order.
    pool.free_blocks([1])
    queue = pool.free_queue()
    assert queue == [3, 4, 2, 1]
    assert pool.reset_prefix_cache() is True
    assert pool.cached == {}
    assert pool.block_hash == [None] * 5
    assert pool.free_queue() == queue
    # Popping a formerly cached block is no longer an eviction.
    assert pool.get_new_blocks(4) == [3, 4, 2, 1]
    assert pool.num_evicted == 0


# ------------------------------------------------------------------ unbounded
@pytest.mark.parametrize("free_order", ["current", "classic"])
def test_unbounded_pool_never_evicts(free_order: str) -> None:
    pool = BlockPool(None, free_order)
    assert pool.unbounded
    assert pool.free_queue() == []
    assert pool.get_new_blocks(3) == [1, 2, 3]
    pool.cache_blocks([1, 2], [H1, H2])
    pool.free_blocks([3, 2, 1])
    # Freed blocks are listed; the endless fresh range is not.
    assert pool.free_queue() == [3, 2, 1]
    # Current order reuses the unhashed block 3 first; classic takes fresh ids
    # first since the queue is [fresh..., 3, 2, 1].
    new = pool.get_new_blocks(3)
    assert new == ([3, 4, 5] if free_order == "current" else [4, 5, 6])
    assert pool.num_evicted == 0
    assert pool.cached == {H1: 1, H2: 2}
    assert pool.num_free_blocks > 1 << 40
