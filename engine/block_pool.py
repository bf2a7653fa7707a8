"""The block pool: ref counts, the hash-to-block map and the LRU free queue.

Follows vLLM v1 ``BlockPool`` (rules 6-10 of reference/vllm-prefix-caching.md):

* Block 0 is the reserved null block; blocks ``1..num_blocks-1`` start in the
  free queue in id order.
* Allocation pops the head of the free queue. If the popped block still carries
  a hash, that hash is dropped from the map: this is an eviction.
* ``touch`` takes a hit block with ``ref_cnt == 0`` out of the free queue.
* Freed blocks (given tail first by the manager) go to the tail when they carry a
  hash. With ``free_order="current"`` an unhashed block goes to the head instead,
  so it is reused before any cached block; ``"classic"`` sends it to the tail.
* No deduplication: one hash may map to several blocks; lookup returns the oldest.

The free queue is stored in three parts whose concatenation is the queue::

    head stack (LIFO, unhashed frees)  |  fresh ids never used  |  tail (OrderedDict, LRU)
    ^ popped first                                                    appended here ^

An unbounded pool is one whose fresh range never ends, so nothing is evicted.
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
    """

    def __init__(self, num_blocks: int | None, free_order: FreeOrder = "current") -> None:
        self.num_blocks = num_blocks
        self.free_order = free_order
        size = 1 if num_blocks is None else num_blocks
        self.ref_cnt: list[int] = [0] * size
        self.block_hash: list[BlockHash | None] = [None] * size
        self.ref_cnt[NULL_BLOCK_ID] = 1  # never allocated, never freed
        # hash -> block id, or an insertion-ordered dict of ids when duplicated.
        self.cached: dict[BlockHash, int | dict[int, None]] = {}
        self._head: list[int] = []
        self._fresh_next = 1
        self._fresh_end: int | None = num_blocks
        self._tail: OrderedDict[int, None] = OrderedDict()
        self.num_evicted = 0

    # ------------------------------------------------------------------ queries
    @property
    def unbounded(self) -> bool:
        return self._fresh_end is None

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be allocated now (``None``-free: unbounded pools report a large number)."""
        if self._fresh_end is None:
            return 1 << 62
        return len(self._head) + (self._fresh_end - self._fresh_next) + len(self._tail)

    def get_cached_block(self, block_hash: BlockHash) -> int | None:
        """The oldest block holding ``block_hash``, or ``None``."""
        entry = self.cached.get(block_hash)
        if entry is None or type(entry) is int:
            return entry  # type: ignore[return-value]
        return next(iter(entry))  # type: ignore[arg-type]

    def free_queue(self) -> list[int]:
        """The whole free queue, head first (for tests and debugging)."""
        fresh_end = self._fresh_end if self._fresh_end is not None else self._fresh_next
        return list(reversed(self._head)) + list(range(self._fresh_next, fresh_end)) + list(self._tail)

    def cached_hashes(self) -> int:
        """Number of distinct hashes in the map."""
        return len(self.cached)

    # ------------------------------------------------------------------ updates
    def touch(self, block_ids: Iterable[int]) -> None:
        """Take a reference on hit blocks, removing free ones from the free queue."""
        ref = self.ref_cnt
        tail = self._tail
        for b in block_ids:
            if ref[b] == 0:
                # A hit block carries a hash, and hashed blocks are only ever in the tail.
                del tail[b]
            ref[b] += 1

    def get_new_blocks(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the head of the free queue, evicting their hashes.

        Raises:
            ValueError: fewer than ``n`` blocks are free (callers check first).
        """
        if n > self.num_free_blocks:
            raise ValueError(f"cannot allocate {n} blocks, only {self.num_free_blocks} free")
        out: list[int] = []
        head, tail, ref, bhash = self._head, self._tail, self.ref_cnt, self.block_hash
        for _ in range(n):
            if head:
                b = head.pop()
            elif self._fresh_end is None or self._fresh_next < self._fresh_end:
                b = self._fresh_next
                self._fresh_next += 1
                if b >= len(ref):
                    ref.append(0)
                    bhash.append(None)
            else:
                b = tail.popitem(last=False)[0]
            h = bhash[b]
            if h is not None:
                self._evict(b, h)
            ref[b] = 1
            out.append(b)
        return out

    def _evict(self, block_id: int, block_hash: BlockHash) -> None:
        entry = self.cached[block_hash]
        if type(entry) is int:
            assert entry == block_id, f"hash map points to block {entry}, evicting {block_id}"
            del self.cached[block_hash]
        else:
            del entry[block_id]  # type: ignore[union-attr]
            if len(entry) == 1:  # type: ignore[arg-type]
                self.cached[block_hash] = next(iter(entry))  # type: ignore[arg-type]
        self.block_hash[block_id] = None
        self.num_evicted += 1

    def cache_blocks(self, block_ids: Sequence[int], hashes: Sequence[BlockHash]) -> None:
        """Give full, newly computed blocks their hashes and make them hittable."""
        bhash, cached = self.block_hash, self.cached
        for b, h in zip(block_ids, hashes):
            assert bhash[b] is None, f"block {b} is already cached"
            bhash[b] = h
            entry = cached.get(h)
            if entry is None:
                cached[h] = b
            elif type(entry) is int:
                cached[h] = {entry: None, b: None}
            else:
                entry[b] = None  # type: ignore[index]

    def free_blocks(self, ordered_block_ids: Iterable[int]) -> None:
        """Drop one reference on each block, in the given (tail-first) order."""
        ref, bhash, tail = self.ref_cnt, self.block_hash, self._tail
        to_head = self.free_order == "current"
        unhashed: list[int] = []
        for b in ordered_block_ids:
            ref[b] -= 1
            assert ref[b] >= 0, f"block {b} freed more often than it was taken"
            if ref[b] == 0:
                if to_head and bhash[b] is None:
                    unhashed.append(b)
                else:
                    tail[b] = None
        if unhashed:
            # Prepended as one group that keeps its order (the first freed ends up
            # at the head), mirroring how hashed blocks are appended as a group.
            self._head.extend(reversed(unhashed))

    def reset_prefix_cache(self) -> bool:
        """Forget every hash; allowed only when no block is in use (vLLM rule 10)."""
        used = sum(1 for r in self.ref_cnt[1:] if r > 0)
        if used:
            return False
        self.cached.clear()
        for i in range(len(self.block_hash)):
            self.block_hash[i] = None
        return True
