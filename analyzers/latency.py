"""What a scheduled replay says about time: TTFT, end-to-end latency, compute saved.

Fed one :class:`RequestResult` at a time (results arrive as requests finish),
then combined with the scheduler's own figures into the ``scheduler`` section
of the replay report. Times are on the simulated clock of a roofline cost model,
not measured: they are as good as the model shape, hardware profile and
efficiency factors behind them, which the report names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvcache.engine.request import RequestResult
from kvcache.engine.scheduler import SchedulerStats, percentile

LEVELS = (50, 90, 99)

LATENCY_DEFINITIONS = {
    "ttft_s": "arrival to the step that samples the first output token (simulated clock)",
    "e2e_s": "arrival to the step that samples the last output token (simulated clock)",
    "prefill_compute_saved_gpu_s": "FLOPs of the prompt tokens served from cache (each request's first admission), "
    "at peak x mfu of the hardware profile",
    "peak_kv_blocks": "most distinct blocks held by running requests at once (shared prefix blocks count once)",
}


@dataclass
class LatencyReport:
    """TTFT/E2E percentiles and GPU time the prefix cache saved."""

    cost_model: Any | None = None  # RooflineCostModel, for compute saved
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    saved_gpu_s: float = 0.0
    preempted_requests: int = 0

    def add(self, result: RequestResult) -> None:
        if result.rejected or result.ttft_s is None or result.e2e_s is None:
            return
        self.ttft.append(result.ttft_s)
        self.e2e.append(result.e2e_s)
        if result.preemptions:
            self.preempted_requests += 1
        if self.cost_model is not None and result.cached_tokens:
            self.saved_gpu_s += self.cost_model.prefill_flops_saved(result.cached_tokens)

    @staticmethod
    def _percentiles(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        ordered = sorted(values)
        return {f"p{p}": round(percentile(ordered, p), 6) for p in LEVELS}

    def section(self, stats: SchedulerStats, *, config: dict[str, Any], block_bytes: int | None) -> dict[str, Any]:
        """The report's ``scheduler`` section."""
        cm = self.cost_model
        return {
            **config,
            "steps": stats.steps,
            "preemptions": stats.preemptions,
            "preempted_requests": self.preempted_requests,
            "peak_running": stats.peak_running,
            "peak_waiting": stats.peak_waiting,
            "peak_kv_blocks": stats.peak_kv_blocks,
            "peak_kv_bytes": stats.peak_kv_blocks * block_bytes if block_bytes else None,
            "prefill_tokens_computed": stats.prefill_tokens,
            "decode_tokens": stats.decode_tokens,
            "recomputed_tokens": stats.recomputed_tokens,
            "prefill_compute_saved_gpu_s": round(self.saved_gpu_s, 6) if cm is not None else None,
            "busy_s": round(stats.busy_s, 6),
            "makespan_s": round(stats.makespan_s, 6),
            "ttft_s": self._percentiles(self.ttft),
            "e2e_s": self._percentiles(self.e2e),
            "percentiles": "nearest rank over requests that ran (rejected ones left out)",
            "definitions": LATENCY_DEFINITIONS,
        }
