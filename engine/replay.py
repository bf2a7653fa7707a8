"""Sequential replay: run requests one at a time, in arrival order.

Each request looks up its prefix, allocates blocks for ``prompt + output - 1``
tokens, caches its full blocks and is freed before the next request starts.
Requests never overlap in time here, so every cached block is in the free queue
between requests; the scheduler (concurrent requests, chunked prefill,
preemption) is a later layer. A request that cannot fit in an otherwise empty
pool is reported as rejected instead of being run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kvcache.engine.config import CacheConfig
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.request import Request, RequestResult


@dataclass(slots=True)
class ReplayStats:
    """Pool-level figures gathered while replaying."""

    evicted_blocks: int = 0
    rejected_requests: int = 0
    peak_cached_blocks: int = 0  # most distinct hashes cached at once


class SequentialReplayer:
    """Drives a :class:`KVCacheManager` over a request stream."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.manager = KVCacheManager(config)
        self.stats = ReplayStats()

    def run(self, requests: Iterable[Request]) -> Iterator[RequestResult]:
        """Replay ``requests`` in the order given, yielding one result each."""
        mgr = self.manager
        pool = mgr.pool
        bs = self.config.block_size
        stats = self.stats
        run_isolated = mgr.run_isolated
        cached = pool.cached
        peak = stats.peak_cached_blocks
        for req in requests:
            prompt_blocks = req.kv_prompt_tokens // bs
            ran = run_isolated(req)
            if ran is None:
                # Does not fit even in an empty pool: vLLM would never admit it.
                stats.rejected_requests += 1
                yield RequestResult(
                    req.request_id, req.session_id, req.org, req.arrival,
                    req.prompt_tokens, 0, 0, prompt_blocks, 0 if prompt_blocks else None, True,
                )
                continue
            stats.evicted_blocks = pool.num_evicted
            if len(cached) > peak:
                peak = stats.peak_cached_blocks = len(cached)
            n_hit = len(ran[0])
            cached_tokens = min(n_hit * bs, req.prompt_tokens)
            yield RequestResult(
                req.request_id, req.session_id, req.org, req.arrival,
                req.prompt_tokens, cached_tokens, n_hit, prompt_blocks,
                n_hit if n_hit < prompt_blocks else None,
            )
        stats.evicted_blocks = pool.num_evicted
