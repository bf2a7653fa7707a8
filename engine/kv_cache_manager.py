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
        keys = request.block_keys
        if max_blocks < len(keys):
            keys = keys[:max_blocks]
        # One C-level pass over the keys; the hit run ends at the first miss.
        hits = list(map(self.pool.cached.get, keys))
        if None in hits:
            del hits[hits.index(None) :]
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
        # Hit blocks carry their hashes already: hashing resumes after them.
        hit_blocks = num_computed // bs if new_computed_blocks else 0
        self._cache_full_blocks(request, blocks, min(total, request.num_kv_tokens), hit_blocks)
        return new_blocks

    def _cache_full_blocks(self, request: Request, blocks: list[int], num_tokens: int, hashed_prefix: int) -> None:
        rid = request.request_id
        start = max(self.num_cached_blocks.get(rid, 0), hashed_prefix)
        end = min(num_tokens // self.block_size, len(request.block_keys))
        if self.config.enable_caching and end > start:
            self.pool.cache_blocks(blocks[start:end], request.block_keys[start:end])
        self.num_cached_blocks[rid] = max(start, end)

    def run_isolated(self, request: Request) -> tuple[list[int], list[int]] | None:
        """A request's whole life (lookup, prompt + decode, cache, free) run alone.

        The sequential replayer's step. With no other request in flight it uses
        the pool's fused :meth:`BlockPool.cycle_isolated`; otherwise it takes the
        ordinary ``get_computed_blocks`` / ``allocate_slots`` / ``free`` path.

        Returns:
            (hit blocks, new blocks), or ``None`` when the request cannot fit and
            nothing was changed.
        """
        hits, hit_tokens = self.get_computed_blocks(request)
        if self.req_to_blocks:
            new_blocks = self.allocate_slots(request, request.num_kv_tokens - hit_tokens, hits, hit_tokens)
            self.free(request)
            return None if new_blocks is None else (hits, new_blocks)
        bs = self.block_size
        total_blocks = -(-request.num_kv_tokens // bs)
        need = total_blocks - len(hits)
        pool = self.pool
        if not pool.unbounded and total_blocks > pool.num_free_blocks:
            return None
        end = min(request.num_kv_tokens // bs, len(request.block_keys)) if self.config.enable_caching else 0
        new_keys = request.block_keys[len(hits) : end] if end > len(hits) else ()
        return hits, pool.cycle_isolated(hits, need, new_keys)

    def free(self, request: Request) -> None:
        """Release the request's blocks, tail first."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.num_cached_blocks.pop(request.request_id, None)
        self.pool.free_blocks(reversed(blocks))
