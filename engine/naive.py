"""A deliberately naive model of the same prefix-cache rules: the oracle.

Per-block objects, a doubly linked free list and a ``hash -> {block_id: block}``
map, written the plain way vLLM's own ``KVCacheBlock``/``FreeKVCacheBlockQueue``
are. No fusing, no lazy unlinking. Tests compare the fast engine against it
request by request (hits, new block ids, free-queue order, hash map), and
``benchmarks/replay_throughput.py`` times both on the same trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvcache.engine.hashing import BlockHash
from kvcache.engine.request import Request


@dataclass(eq=False)
class _Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: BlockHash | None = None
    prev: "_Block | None" = None
    next: "_Block | None" = None


class _FreeList:
    """Doubly linked list with sentinels; O(1) remove, append and prepend."""

    def __init__(self) -> None:
        self.front = _Block(-1)
        self.back = _Block(-2)
        self.front.next = self.back
        self.back.prev = self.front
        self.size = 0

    def append(self, b: _Block) -> None:
        last = self.back.prev
        assert last is not None
        last.next, b.prev, b.next, self.back.prev = b, last, self.back, b
        self.size += 1

    def prepend(self, b: _Block) -> None:
        first = self.front.next
        assert first is not None
        self.front.next, b.prev, b.next, first.prev = b, self.front, first, b
        self.size += 1

    def remove(self, b: _Block) -> None:
        assert b.prev is not None and b.next is not None, f"block {b.block_id} is not in the free list"
        b.prev.next, b.next.prev = b.next, b.prev
        b.prev = b.next = None
        self.size -= 1

    def popleft(self) -> _Block:
        b = self.front.next
        assert b is not None and b is not self.back, "free list is empty"
        self.remove(b)
        return b

    def ids(self) -> list[int]:
        out, b = [], self.front.next
        while b is not None and b is not self.back:
            out.append(b.block_id)
            b = b.next
        return out


class NaivePrefixCache:
    """The rules of reference/vllm-prefix-caching.md, one request at a time.

    Args:
        num_blocks: blocks including the null block 0, or ``None`` for unbounded
            (blocks are then created on demand, after every existing free block
            that carries no hash, exactly where an endless fresh range would sit).
    """

    def __init__(self, num_blocks: int | None, block_size: int, free_order: str = "current") -> None:
        self.block_size = block_size
        self.free_order = free_order
        self.unbounded = num_blocks is None
        self.blocks: list[_Block] = [_Block(0, ref_cnt=1)]
        self.free = _FreeList()
        self.fresh: list[_Block] = []  # unbounded only: never-used blocks, in id order
        for i in range(1, num_blocks or 1):
            b = _Block(i)
            self.blocks.append(b)
            self.free.append(b)
        self.map: dict[BlockHash, dict[int, _Block]] = {}
        self.num_evicted = 0

    def free_queue(self) -> list[int]:
        return self.free.ids()

    def _pop(self) -> _Block:
        if self.unbounded:
            # The queue is: head-prepended unhashed blocks, then an endless fresh
            # range, then the tail. Only "current" order ever prepends.
            first = self.free.front.next
            if self.free_order == "current" and first is not self.free.back and first is not None and first.block_hash is None:
                return self.free.popleft()
            b = _Block(len(self.blocks))
            self.blocks.append(b)
            return b
        return self.free.popleft()

    def run(self, req: Request) -> tuple[list[int], list[int]] | None:
        """Look up, allocate for prompt + decode, cache full blocks, free tail first."""
        bs = self.block_size
        max_hit = min(req.hit_cap_tokens // bs, len(req.block_keys))
        hits: list[_Block] = []
        for i in range(max_hit):
            entry = self.map.get(req.block_keys[i])
            if not entry:
                break
            hits.append(next(iter(entry.values())))
        total = -(-req.num_kv_tokens // bs)
        need = total - len(hits)
        if not self.unbounded:
            evictable = sum(1 for b in hits if b.ref_cnt == 0)
            if need + evictable > self.free.size:
                return None
        for b in hits:
            if b.ref_cnt == 0:
                self.free.remove(b)
            b.ref_cnt += 1
        new: list[_Block] = []
        for _ in range(need):
            b = self._pop()
            if b.block_hash is not None:
                entry = self.map[b.block_hash]
                del entry[b.block_id]
                if not entry:
                    del self.map[b.block_hash]
                b.block_hash = None
                self.num_evicted += 1
            b.ref_cnt = 1
            new.append(b)
        blocks = hits + new
        end = min(req.num_kv_tokens // bs, len(req.block_keys))
        for i in range(len(hits), end):
            b = blocks[i]
            b.block_hash = req.block_keys[i]
            self.map.setdefault(b.block_hash, {})[b.block_id] = b
        head_group: list[_Block] = []
        for b in reversed(blocks):
            b.ref_cnt -= 1
            if b.ref_cnt != 0:
                continue
            if b.block_hash is None and self.free_order == "current":
                head_group.append(b)
            elif b.block_hash is not None or not self.unbounded:
                self.free.append(b)
            # else: classic order in an unbounded pool queues an unhashed block
            # behind an endless fresh range, so it is never reused: drop it.
        for b in reversed(head_group):
            self.free.prepend(b)
        return [b.block_id for b in hits], [b.block_id for b in new]
