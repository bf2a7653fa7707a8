"""The block pool: ref counts, the hash-to-block map and the LRU free queue.

Follows vLLM v1 ``BlockPool`` (rules 6-10 of reference/vllm-prefix-caching.md):

* Block 0 is the reserved null block; blocks ``1..num_blocks-1`` start in the
  free queue in id order.
* Allocation pops the head of the free queue. If the popped block still carries
  a hash, that hash is dropped from the map: this is an eviction.
* ``touch`` takes a hit block with ``ref_cnt == 0`` out of the free queue.
* Freed blocks (given tail first by the manager) go to the tail when they carry a
  hash. With ``free_order="current"`` unhashed blocks go to the head instead (as
  one group that keeps its order), so they are reused before any cached block;
  ``"classic"`` sends every freed block to the tail.
* No deduplication: one hash may map to several blocks; lookup returns the oldest.

The free queue is stored in three parts whose concatenation is the queue::

    head stack (unhashed frees)  |  fresh ids never used  |  tail (OrderedDict, LRU)
    ^ popped first                                              appended here ^

An unbounded pool is one whose fresh range never ends, so nothing is evicted.

Speed: a touched block is not unlinked from the tail at once. It stays there,
*lazily*, with ``ref_cnt > 0``: allocation skips (and drops) such entries, and
freeing moves the block to the end. The observable queue (``free_queue()``) is
the tail without those entries, so this is exactly vLLM's order at a fraction of
the cost of unlinking and relinking every hit block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from kvcache.engine.config import FreeOrder
from kvcache.engine.hashing import BlockHash

NULL_BLOCK_ID = 0


class BlockPool:
    """A fixed (or unbounded) set of KV blocks.

    Args:
        num_blocks: blocks including the null block, or ``None`` for unbounded.
        free_order: ``"current"`` or ``"classic"`` (see module docstring).

    Attributes:
        ref_cnt: references per block id (the null block holds one forever).
        block_hash: the hash each block carries, ``None`` when it has none.
        cached: hash -> the oldest block holding it.
        num_evicted: hashes dropped because their block was reallocated.
    """

    def __init__(self, num_blocks: int | None, free_order: FreeOrder = "current") -> None:
        self.num_blocks = num_blocks
        self.free_order = free_order
        size = 1 if num_blocks is None else num_blocks
        self.ref_cnt: list[int] = [0] * size
        self.block_hash: list[BlockHash | None] = [None] * size
        self.ref_cnt[NULL_BLOCK_ID] = 1  # never allocated, never freed
        self.cached: dict[BlockHash, int] = {}
        # Younger blocks holding an already-cached hash, oldest first (no dedup).
        self._duplicates: dict[BlockHash, list[int]] = {}
        self._head: list[int] = []  # a stack: its last element is the queue head
        self._fresh_next = 1
        self._fresh_end: int | None = num_blocks
        self._tail: OrderedDict[int, None] = OrderedDict()
        self._lazy_in_use = 0  # tail entries whose ref_cnt > 0 (see module docstring)
        self.num_evicted = 0

    # ------------------------------------------------------------------ queries
    @property
    def unbounded(self) -> bool:
        return self._fresh_end is None

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be allocated now (unbounded pools report a huge number)."""
        if self._fresh_end is None:
            return 1 << 62
        return len(self._head) + (self._fresh_end - self._fresh_next) + len(self._tail) - self._lazy_in_use

    def get_cached_block(self, block_hash: BlockHash) -> int | None:
        """The oldest block holding ``block_hash``, or ``None``."""
        return self.cached.get(block_hash)

    def blocks_for_hash(self, block_hash: BlockHash) -> list[int]:
        """Every block holding ``block_hash``, oldest first."""
        first = self.cached.get(block_hash)
        if first is None:
            return []
        return [first, *self._duplicates.get(block_hash, ())]

    def free_queue(self) -> list[int]:
        """The whole free queue, head first (for tests and debugging)."""
        fresh_end = self._fresh_end if self._fresh_end is not None else self._fresh_next
        ref = self.ref_cnt
        tail = [b for b in self._tail if ref[b] == 0]
        return list(reversed(self._head)) + list(range(self._fresh_next, fresh_end)) + tail

    def cached_hashes(self) -> int:
        """Number of distinct hashes in the map."""
        return len(self.cached)

    # ------------------------------------------------------------------ updates
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take a reference on hit blocks; free ones leave the free queue."""
        ref = self.ref_cnt
        lazy = 0
        for b in block_ids:
            r = ref[b]
            if not r:
                lazy += 1  # a hit carries a hash, so it sits (lazily) in the tail
            ref[b] = r + 1
        self._lazy_in_use += lazy

    def get_new_blocks(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the head of the free queue, evicting their hashes.

        Raises:
            ValueError: fewer than ``n`` blocks are free (callers check first).
        """
        if n > self.num_free_blocks:
            raise ValueError(f"cannot allocate {n} blocks, only {self.num_free_blocks} free")
        head = self._head
        out: list[int] = []
        if head:
            k = min(n, len(head))
            out = head[-k:][::-1]
            del head[-k:]
        if len(out) < n:
            want = n - len(out)
            start = self._fresh_next
            stop = start + want if self._fresh_end is None else min(start + want, self._fresh_end)
            if stop > start:
                out.extend(range(start, stop))
                self._fresh_next = stop
                grow = stop - len(self.ref_cnt)
                if grow > 0:
                    self.ref_cnt.extend([0] * grow)
                    self.block_hash.extend([None] * grow)
        ref, bhash = self.ref_cnt, self.block_hash
        if len(out) < n:
            popitem = self._tail.popitem
            while len(out) < n:
                b = popitem(last=False)[0]
                if ref[b]:  # touched while lazily in the tail: not really free
                    self._lazy_in_use -= 1
                    continue
                out.append(b)
        for b in out:
            h = bhash[b]
            if h is not None:
                self._evict(b, h)
            ref[b] = 1
        return out

    def _evict(self, block_id: int, block_hash: BlockHash) -> None:
        cached = self.cached
        if cached.get(block_hash) == block_id:
            younger = self._duplicates.get(block_hash)
            if younger:
                cached[block_hash] = younger.pop(0)
                if not younger:
                    del self._duplicates[block_hash]
            else:
                del cached[block_hash]
        else:
            younger = self._duplicates[block_hash]
            younger.remove(block_id)
            if not younger:
                del self._duplicates[block_hash]
        self.block_hash[block_id] = None
        self.num_evicted += 1

    def cache_blocks(self, block_ids: Sequence[int], hashes: Sequence[BlockHash]) -> None:
        """Give full, newly computed blocks their hashes and make them hittable."""
        bhash, cached = self.block_hash, self.cached
        setdefault = cached.setdefault
        for b, h in zip(block_ids, hashes):
            assert bhash[b] is None, f"block {b} is already cached"
            bhash[b] = h
            if setdefault(h, b) != b:
                self._duplicates.setdefault(h, []).append(b)

    def free_blocks(self, ordered_block_ids: Iterable[int]) -> None:
        """Drop one reference on each block, in the given (tail-first) order."""
        ref, bhash, tail = self.ref_cnt, self.block_hash, self._tail
        to_head = self.free_order == "current"
        move_to_end = tail.move_to_end
        unhashed: list[int] = []
        lazy = 0
        for b in ordered_block_ids:
            r = ref[b] - 1
            ref[b] = r
            if r:
                assert r > 0, f"block {b} freed more often than it was taken"
                continue
            if bhash[b] is None and to_head:
                unhashed.append(b)
            elif b in tail:  # still lazily linked since its touch
                move_to_end(b)
                lazy += 1
            else:
                tail[b] = None
        self._lazy_in_use -= lazy
        if unhashed:
            # Prepended as one group that keeps its order (the first freed ends up
            # at the head), mirroring how hashed blocks are appended as a group.
            self._head.extend(reversed(unhashed))

    def cycle_isolated(self, hits: list[int], num_new: int, new_keys: Sequence[BlockHash]) -> list[int]:
        """A whole request's life when no other block is in use, fused for speed.

        Equivalent to ``touch(hits)``, ``new = get_new_blocks(num_new)``,
        ``cache_blocks(new[:len(new_keys)], new_keys)`` and
        ``free_blocks(reversed(hits + new))``, but without ref-count traffic. It
        is valid only when every block (but the null block) has ``ref_cnt == 0``,
        which always holds between the requests of a sequential replay; the
        equivalence is property-tested. The caller checks capacity first.

        Returns:
            The new block ids, in allocation order.
        """
        assert self._lazy_in_use == 0, "cycle_isolated needs a pool with no block in use"
        head, tail, bhash, cached = self._head, self._tail, self.block_hash, self.cached
        out: list[int] = []
        if head:
            k = min(num_new, len(head))
            out = head[-k:][::-1]
            del head[-k:]
        if len(out) < num_new:
            start = self._fresh_next
            want = num_new - len(out)
            stop = start + want if self._fresh_end is None else min(start + want, self._fresh_end)
            if stop > start:
                out.extend(range(start, stop))
                self._fresh_next = stop
                grow = stop - len(self.ref_cnt)
                if grow > 0:
                    self.ref_cnt.extend([0] * grow)
                    bhash.extend([None] * grow)
        unlinked_hits: set[int] = set()
        if len(out) < num_new:
            hit_set = set(hits)  # hits have left the queue: skip them when popping
            popitem = tail.popitem
            while len(out) < num_new:
                b = popitem(last=False)[0]
                if b in hit_set:
                    unlinked_hits.add(b)
                else:
                    out.append(b)
        dups = self._duplicates
        evicted = 0
        for b in out:
            h = bhash[b]
            if h is not None:
                if cached.get(h) == b and h not in dups:
                    del cached[h]  # the common eviction, inlined
                    bhash[b] = None
                    evicted += 1
                else:
                    self._evict(b, h)
        self.num_evicted += evicted
        setdefault = cached.setdefault
        for b, h in zip(out, new_keys):
            bhash[b] = h
            if setdefault(h, b) != b:
                dups.setdefault(h, []).append(b)
        # Free tail first: new blocks (deepest first), then the hits.
        to_head = self.free_order == "current"
        unhashed: list[int] = []
        for b in reversed(out):
            if to_head and bhash[b] is None:
                unhashed.append(b)
            else:
                tail[b] = None
        move_to_end = tail.move_to_end
        if unlinked_hits:
            for b in reversed(hits):
                tail[b] = None
                move_to_end(b)
        else:
            for b in reversed(hits):
                move_to_end(b)
        if unhashed:
            head.extend(reversed(unhashed))
        return out

    def reset_prefix_cache(self) -> bool:
        """Forget every hash; allowed only when no block is in use (vLLM rule 10)."""
        if any(self.ref_cnt[1:]):
            return False
        self.cached.clear()
        self._duplicates.clear()
        for i in range(len(self.block_hash)):
            self.block_hash[i] = None
        return True
