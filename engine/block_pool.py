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

    head stack (unhashed frees)  |  fresh ids never used  |  tail (LRU log)
    ^ popped first                                              appended here ^

An unbounded pool is one whose fresh range never ends, so nothing is evicted.

The tail is an append-only *log* with lazy deletion, not a linked list: freeing
a block appends its id and bumps ``_log_count[id]``. A block's place in the queue
is its latest entry; older entries, and entries of blocks that were touched
since, are skipped (and dropped) when the head is popped. Touch therefore costs
nothing but a ref-count bump, and freeing is an append, where unlinking and
relinking nodes of a large linked list costs cache misses on every hit. The log
is compacted once it is more than twice the live tail, so memory follows the
number of blocks, not the length of the trace.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from kvcache.engine.config import FreeOrder
from kvcache.engine.hashing import BlockHash

NULL_BLOCK_ID = 0
_COMPACT_SLACK = 4096


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
        self._log: deque[int] = deque()  # the tail, as an LRU log (module docstring)
        self._log_count: list[int] = [0] * size  # entries of each block in the log
        self._tail_free = 0  # blocks whose latest log entry is live
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
        return len(self._head) + (self._fresh_end - self._fresh_next) + self._tail_free

    def get_cached_block(self, block_hash: BlockHash) -> int | None:
        """The oldest block holding ``block_hash``, or ``None``."""
        return self.cached.get(block_hash)

    def blocks_for_hash(self, block_hash: BlockHash) -> list[int]:
        """Every block holding ``block_hash``, oldest first."""
        first = self.cached.get(block_hash)
        if first is None:
            return []
        return [first, *self._duplicates.get(block_hash, ())]

    def _live_tail(self) -> list[int]:
        """The tail in queue order: each free block at its latest log entry."""
        seen = [0] * len(self._log_count)
        count, ref = self._log_count, self.ref_cnt
        out = []
        for b in self._log:
            seen[b] += 1
            if seen[b] == count[b] and ref[b] == 0:
                out.append(b)
        return out

    def free_queue(self) -> list[int]:
        """The whole free queue, head first (for tests and debugging)."""
        fresh_end = self._fresh_end if self._fresh_end is not None else self._fresh_next
        return list(reversed(self._head)) + list(range(self._fresh_next, fresh_end)) + self._live_tail()

    def cached_hashes(self) -> int:
        """Number of distinct hashes in the map."""
        return len(self.cached)

    # ------------------------------------------------------------------ updates
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take a reference on hit blocks; free ones leave the free queue."""
        ref = self.ref_cnt
        taken = 0
        for b in block_ids:
            r = ref[b]
            if not r:
                taken += 1  # a free hit carries a hash, so it was in the tail
            ref[b] = r + 1
        self._tail_free -= taken

    def _grow_to(self, stop: int) -> None:
        grow = stop - len(self.ref_cnt)
        if grow > 0:
            self.ref_cnt.extend([0] * grow)
            self.block_hash.extend([None] * grow)
            self._log_count.extend([0] * grow)

    def _pop_head_and_fresh(self, n: int) -> list[int]:
        """Up to ``n`` blocks from the head stack, then the fresh range."""
        if n <= 0:
            return []  # (head[-0:] would be the whole stack)
        head = self._head
        out: list[int] = []
        if head:
            k = min(n, len(head))
            out = head[-k:][::-1]
            del head[-k:]
        if len(out) < n:
            start = self._fresh_next
            want = n - len(out)
            stop = start + want if self._fresh_end is None else min(start + want, self._fresh_end)
            if stop > start:
                out.extend(range(start, stop))
                self._fresh_next = stop
                self._grow_to(stop)
        return out

    def _pop_tail(self, out: list[int], n: int, skip: set[int] | None = None) -> None:
        """Pop live tail entries onto ``out`` until it holds ``n`` blocks.

        An entry is live if it is its block's latest and the block is free (and,
        for the fused path, not one of the request's own hits in ``skip``).
        """
        log, count, ref = self._log, self._log_count, self.ref_cnt
        popleft = log.popleft
        while len(out) < n:
            b = popleft()
            c = count[b] - 1
            count[b] = c
            if c or ref[b] or (skip is not None and b in skip):
                continue
            out.append(b)
            self._tail_free -= 1

    def _evict_all(self, blocks: list[int]) -> None:
        bhash, cached, dups = self.block_hash, self.cached, self._duplicates
        evicted = 0
        for b in blocks:
            h = bhash[b]
            if h is not None:
                if cached.get(h) == b and h not in dups:
                    del cached[h]  # the common eviction, inlined
                    bhash[b] = None
                    evicted += 1
                else:
                    self._evict(b, h)
        self.num_evicted += evicted

    def get_new_blocks(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the head of the free queue, evicting their hashes.

        Raises:
            ValueError: fewer than ``n`` blocks are free (callers check first).
        """
        if n > self.num_free_blocks:
            raise ValueError(f"cannot allocate {n} blocks, only {self.num_free_blocks} free")
        out = self._pop_head_and_fresh(n)
        if len(out) < n:
            self._pop_tail(out, n)
        self._evict_all(out)
        ref = self.ref_cnt
        for b in out:
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

    def _append_tail(self, blocks: Iterable[int]) -> None:
        log, count = self._log, self._log_count
        append = log.append
        n = 0
        for b in blocks:
            append(b)
            count[b] += 1
            n += 1
        self._tail_free += n
        if len(log) > 2 * self._tail_free + _COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        """Drop dead log entries so the log holds each free tail block once."""
        live = self._live_tail()
        count = self._log_count
        for b in self._log:
            count[b] = 0
        for b in live:
            count[b] = 1
        self._log = deque(live)

    def free_blocks(self, ordered_block_ids: Iterable[int]) -> None:
        """Drop one reference on each block, in the given (tail-first) order."""
        ref, bhash = self.ref_cnt, self.block_hash
        to_head = self.free_order == "current"
        unhashed: list[int] = []
        to_tail: list[int] = []
        for b in ordered_block_ids:
            r = ref[b] - 1
            assert r >= 0, f"block {b} freed more often than it was taken"
            ref[b] = r
            if not r:
                if to_head and bhash[b] is None:
                    unhashed.append(b)
                else:
                    to_tail.append(b)
        self._append_tail(to_tail)
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
        equivalence is tested against the naive oracle. The caller checks
        capacity first.

        Returns:
            The new block ids, in allocation order.
        """
        out = self._pop_head_and_fresh(num_new)
        self._tail_free -= len(hits)  # hits leave the queue for the request's life
        if len(out) < num_new:
            self._pop_tail(out, num_new, skip=set(hits))
        self._evict_all(out)
        bhash, cached, dups = self.block_hash, self.cached, self._duplicates
        setdefault = cached.setdefault
        for b, h in zip(out, new_keys):
            bhash[b] = h
            if setdefault(h, b) != b:
                dups.setdefault(h, []).append(b)
        # Free tail first: new blocks (deepest first), then the hits.
        if self.free_order == "current" and len(new_keys) < len(out):
            self._head.extend(out[len(new_keys):])  # the unhashed group, first-freed on top
            self._append_tail(reversed(out[: len(new_keys)]))
        else:
            self._append_tail(reversed(out))
        self._append_tail(reversed(hits))
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
