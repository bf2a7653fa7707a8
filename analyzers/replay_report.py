"""Run a request stream through the sequential replayer and summarise it.

This is the library behind ``kvcache replay``: the CLI parses options, builds a
:class:`RequestStream` and a :class:`CacheConfig`, and renders the
:class:`ReplayReport` this module returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvcache.analyzers.hit_rates import DEFINITIONS, HitRateReport
from kvcache.engine.config import CacheConfig
from kvcache.engine.replay import ReplayStats, SequentialReplayer
from kvcache.engine.request import RequestResult
from kvcache.engine.traces.stream import RequestStream

SEQUENTIAL_NOTE = (
    "sequential replay: requests run one at a time in arrival order and never overlap; "
    "each request's prompt (and recorded output) blocks are cached when it completes"
)
NO_CAP_NOTE = (
    "hit cap 'none': every trace block can hit, including a fully repeated prompt "
    "(the block-hash trace convention); --hit-cap vllm recomputes the last prompt token as vLLM does"
)


@dataclass
class ReplayReport:
    """Everything ``kvcache replay`` prints."""

    trace: str
    input_format: str
    config: CacheConfig
    hit_cap: str
    hit_rates: HitRateReport
    stats: ReplayStats
    skipped: list[dict[str, Any]]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        t = self.hit_rates.total
        return {
            "trace": self.trace,
            "input_format": self.input_format,
            "mode": "sequential",
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "cached_tokens": t.cached_tokens,
            "token_hit_rate": round(t.token_hit_rate, 6),
            "blocks": t.blocks,
            "hit_blocks": t.hit_blocks,
            "block_hit_rate": round(t.block_hit_rate, 6),
            "block_size": self.config.block_size,
            "capacity_blocks": self.config.num_blocks,
            "usable_blocks": self.config.usable_blocks,
            "evicted_blocks": self.stats.evicted_blocks,
            "rejected_requests": self.stats.rejected_requests,
            "skipped_lines": len(self.skipped),
            "hash": self.config.hash_algo,
            "free_order": self.config.free_order,
            "hit_cap": self.hit_cap,
            "definitions": DEFINITIONS,
            "notes": self.notes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "sessions": self.hit_rates.session_rows(),
            "orgs": self.hit_rates.org_rows(),
            "skipped": self.skipped,
        }


def run_replay(
    stream: RequestStream,
    config: CacheConfig,
    on_result: Callable[[RequestResult], None] | None = None,
) -> ReplayReport:
    """Replay ``stream`` through a fresh cache.

    Args:
        stream: the requests; its block size must equal ``config.block_size``.
        on_result: called with every request's result (per-request files, progress).
    """
    assert stream.block_size == config.block_size, "stream and cache disagree on block size"
    replayer = SequentialReplayer(config)
    report = HitRateReport()
    for result in replayer.run(stream):
        report.add(result)
        if on_result is not None:
            on_result(result)
    notes = [SEQUENTIAL_NOTE]
    if stream.hit_cap == "none":
        notes.append(NO_CAP_NOTE)
    return ReplayReport(
        trace=stream.path,
        input_format=stream.format or "unknown",
        config=config,
        hit_cap=stream.hit_cap,
        hit_rates=report,
        stats=replayer.stats,
        skipped=[{"line": s.line, "reason": s.reason} for s in stream.skipped],
        notes=notes,
    )
