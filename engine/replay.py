"""Sequential replay: run requests one at a time, in arrival order.

Each request looks up its prefix, allocates blocks for ``prompt + output - 1``
tokens, caches its full blocks and is freed before the next request starts.
Requests never overlap in time here, so every cached block is in the free queue
between requests; the scheduler (concurrent requests, chunked prefill,
preemption) is a later layer. A request that cannot fit in an otherwise empty
pool is reported as rejected instead of being run.

Two implementations of the same cycle exist and give identical results:

* ``c``: ``kvcache.engine._seqcache``, compiled when kvcache is installed;
* ``python``: :class:`KVCacheManager` over :class:`BlockPool`, the readable
  reference (and the fallback when the extension is missing, or when
  ``KVCACHE_PURE_PYTHON=1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kvcache.engine.config import CacheConfig
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.request import Request, RequestResult


def load_accelerator() -> Any | None:
    """The compiled ``SeqCache`` type, or ``None`` (missing, or disabled by env)."""
    if os.environ.get("KVCACHE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from kvcache.engine._seqcache import SeqCache
    except ImportError:
        return None
    return SeqCache


def c_toolchain_present() -> bool:
    """Whether this machine could compile the extension (a C compiler and Python.h).

    Without one, installing falls back to pure Python by design; with one, a
    missing extension means the build broke.
    """
    import shutil
    import sysconfig
    from pathlib import Path

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None and Path(sysconfig.get_paths()["include"], "Python.h").exists()


@dataclass(slots=True)
class ReplayStats:
    """Pool-level figures gathered while replaying."""

    evicted_blocks: int = 0
    rejected_requests: int = 0
    peak_cached_blocks: int = 0  # most distinct hashes cached at once


class SequentialReplayer:
    """Replays a request stream one request at a time.

    Args:
        config: the cache configuration.
        implementation: ``auto`` (C when available), ``c`` or ``python``.
    """

    def __init__(self, config: CacheConfig, implementation: str = "auto") -> None:
        self.config = config
        self.stats = ReplayStats()
        seq_cache = load_accelerator() if implementation in ("auto", "c") else None
        if implementation == "c" and seq_cache is None:
            raise RuntimeError("the C accelerator kvcache.engine._seqcache is not available")
        if implementation not in ("auto", "c", "python"):
            raise ValueError(f"unknown implementation {implementation!r}")
        self.implementation = "c" if seq_cache is not None else "python"
        self.manager = KVCacheManager(config) if seq_cache is None else None
        self.seq_cache = seq_cache(config.num_blocks, config.free_order) if seq_cache is not None else None

    @property
    def cached(self) -> dict:
        """The hash -> oldest block map of whichever implementation runs."""
        return self.seq_cache.cached if self.seq_cache is not None else self.manager.pool.cached  # type: ignore[union-attr]

    def free_queue(self) -> list[int]:
        """The free queue, head first."""
        return self.seq_cache.free_queue() if self.seq_cache is not None else self.manager.pool.free_queue()  # type: ignore[union-attr]

    def _python_cycle(self) -> Any:
        run_isolated = self.manager.run_isolated  # type: ignore[union-attr]

        def cycle(req: Request) -> int:
            ran = run_isolated(req)
            return -1 if ran is None else len(ran[0])

        return cycle

    def _c_cycle(self) -> Any:
        cycle_c = self.seq_cache.cycle  # type: ignore[union-attr]
        bs = self.config.block_size
        caching = self.config.enable_caching

        def cycle(req: Request) -> int:
            keys = req.block_keys
            kv = req.num_kv_tokens
            if not caching:
                return cycle_c(keys, 0, -(-kv // bs), 0)
            return cycle_c(keys, req.hit_cap_tokens // bs, -(-kv // bs), kv // bs)

        return cycle

    def run(self, requests: Iterable[Request]) -> Iterator[RequestResult]:
        """Replay ``requests`` in the order given, yielding one result each."""
        bs = self.config.block_size
        stats = self.stats
        cycle = self._c_cycle() if self.seq_cache is not None else self._python_cycle()
        counter = self.seq_cache if self.seq_cache is not None else self.manager.pool  # type: ignore[union-attr]
        cached = self.cached
        peak = stats.peak_cached_blocks
        for req in requests:
            prompt_blocks = req.kv_prompt_tokens // bs
            n_hit = cycle(req)
            if n_hit < 0:
                # Does not fit even in an empty pool: vLLM would never admit it.
                stats.rejected_requests += 1
                yield RequestResult(
                    req.request_id, req.session_id, req.org, req.arrival,
                    req.prompt_tokens, 0, 0, prompt_blocks, 0 if prompt_blocks else None, True,
                    req.billed_prompt_tokens, req.billed_cached_tokens,
                )
                continue
            if len(cached) > peak:
                peak = stats.peak_cached_blocks = len(cached)
            stats.evicted_blocks = counter.num_evicted
            cached_tokens = min(n_hit * bs, req.prompt_tokens)
            yield RequestResult(
                req.request_id, req.session_id, req.org, req.arrival,
                req.prompt_tokens, cached_tokens, n_hit, prompt_blocks,
                n_hit if n_hit < prompt_blocks else None, False,
                req.billed_prompt_tokens, req.billed_cached_tokens,
            )
        stats.evicted_blocks = counter.num_evicted
