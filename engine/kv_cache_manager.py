"""The per-request API over the block pool, as vLLM v1's ``KVCacheManager``.

A request's blocks, left to right, after ``get_computed_blocks`` and
``allocate_slots``::

    |<-- computed (hit) blocks -->|<------- new blocks ------->|
    [ h0 ][ h1 ][ h2 ]             [ b3 ][ b4 ][ b5 ][ b6 (partial) ]
      touched: ref_cnt += 1          popped from the free-queue head
                                     full ones hashed once their tokens are computed

``free`` releases them tail first, so the deepest (longest-prefix) blocks reach
the LRU tail first and are evicted before shallower ones.
"""

from __future__ import annotations

from kvcache.engine.block_pool import BlockPool
from kvcache.engine.config import CacheConfig
from kvcache.engine.request import Request


class KVCacheManager:
    """Prefix-cache lookups and block allocation for requests."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.block_size = config.block_size
        self.pool = BlockPool(config.num_blocks, config.free_order)
        self.req_to_blocks: dict[str, list[int]] = {}
        self.num_cached_blocks: dict[str, int] = {}

    def get_computed_blocks(self, request: Request) -> tuple[list[int], int]:
        """Longest run of cached blocks from the start of the prompt.

        Returns:
            (hit block ids, hit tokens). The hit is block-aligned and capped at
            ``request.hit_cap_tokens`` (``prompt - 1`` under vLLM rules).
        """
        if not self.config.enable_caching:
            return [], 0
        max_blocks = min(request.hit_cap_tokens // self.block_size, len(request.block_keys))
        cached = self.pool.cached
        hits: list[int] = []
        keys = request.block_keys
        for i in range(max_blocks):
            entry = cached.get(keys[i])
            if entry is None:
                break
            hits.append(entry if type(entry) is int else next(iter(entry)))  # type: ignore[arg-type]
        return hits, len(hits) * self.block_size

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_blocks: list[int] | None = None,
        num_new_computed_tokens: int = 0,
    ) -> list[int] | None:
        """Reserve blocks for ``num_new_tokens`` more tokens of ``request``.

        Returns:
            The newly popped block ids, or ``None`` when not enough blocks are free
            (hit blocks that are themselves free count against the free supply).
        """
        pool = self.pool
        bs = self.block_size
        new_computed_blocks = new_computed_blocks or []
        blocks = self.req_to_blocks.setdefault(request.request_id, [])
        num_computed = request.num_computed_tokens + num_new_computed_tokens
        total = num_computed + num_new_tokens
        need = -(-total // bs) - len(blocks) - len(new_computed_blocks)
        if not pool.unbounded:
            ref = pool.ref_cnt
            evictable_hits = sum(1 for b in new_computed_blocks if ref[b] == 0)
            if need + evictable_hits > pool.num_free_blocks:
                return None
        # Hits leave the free queue before any new block is popped, so a request
        # never evicts its own hits.
        pool.touch(new_computed_blocks)
        blocks.extend(new_computed_blocks)
        new_blocks = pool.get_new_blocks(need) if need > 0 else []
        blocks.extend(new_blocks)
        request.num_computed_tokens = num_computed
        self._cache_full_blocks(request, blocks, min(total, request.num_kv_tokens))
        return new_blocks

    def _cache_full_blocks(self, request: Request, blocks: list[int], num_tokens: int) -> None:
        rid = request.request_id
        start = self.num_cached_blocks.get(rid, 0)
        end = min(num_tokens // self.block_size, len(request.block_keys))
        if self.config.enable_caching and end > start:
            # Hit blocks are a prefix and already carry their hashes.
            bhash = self.pool.block_hash
            while start < end and bhash[blocks[start]] is not None:
                start += 1
            if start < end:
                self.pool.cache_blocks(blocks[start:end], request.block_keys[start:end])
        self.num_cached_blocks[rid] = max(start, end)

    def free(self, request: Request) -> None:
        """Release the request's blocks, tail first."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.num_cached_blocks.pop(request.request_id, None)
        self.pool.free_blocks(reversed(blocks))
