"""The replay report: hit rates plus what the engine says about the run.

Reads engine results only. The caller (``kvcache replay``) drives the engine and
feeds every :class:`RequestResult` to :meth:`HitRateReport.add`, then builds a
:class:`ReplayReport` from the totals and the replayer's stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvcache.analyzers.billing import BilledComparison
from kvcache.analyzers.hit_rates import DEFINITIONS, HitRateReport
from kvcache.engine.config import CacheConfig
from kvcache.engine.replay import ReplayStats

SEQUENTIAL_NOTE = (
    "sequential replay: requests run one at a time in arrival order and never overlap; "
    "each request's prompt (and recorded output) blocks are cached when it completes"
)
SCHEDULED_NOTE = (
    "scheduled replay: vLLM v1 continuous batching (token budget, chunked prefill, recompute preemption) on a "
    "simulated clock priced by a roofline model of {shape} on {hardware}; requests overlap, so hits can differ "
    "from --sequential (a request cannot hit blocks another has not yet been scheduled to write)"
)
COMPUTE_NOTE = (
    "--compute ran {model} on this machine's CPU (fp32) with its K/V in the pool's pages; "
    "token ids outside the model's vocabulary are folded into it (equal ids, equal K/V)"
)
NO_CAP_NOTE = (
    "hit cap 'none': every trace block can hit, including a fully repeated prompt "
    "(the block-hash trace convention); --hit-cap vllm recomputes the last prompt token as vLLM does"
)
TOKENIZER_NOTE = (
    "text is rendered with kvcache's chat template and tokenized with {tokenizer}; "
    "token counts approximate the serving model's own tokenizer and template"
)


PROVIDER_NOTE = (
    "provider {provider}: rules from engine/data/providers.json; prefixes are matched on engine blocks "
    "(a read can fall up to one block short of the provider's count); hosted caches have no capacity to model, "
    "so evicted blocks count TTL expiries"
)
BREAKPOINT_NOTE = (
    "{provider} writes cache entries only at breakpoints: the logged markers, else the end of each prompt; "
    "its lookback walks kvcache's segments (two per message), an approximation of the API's content blocks "
    "(token-id and block-hash traces have no segments: any earlier write is reachable)"
)


def notes_for(
    input_format: str, hit_cap: str, tokenizers: list[str], provider: str = "vllm", breakpoints_used: bool = False,
    scheduled: dict[str, str] | None = None, compute_model: str | None = None,
) -> list[str]:
    """The caveats that apply to a run, printed under the table and kept in JSON.

    ``scheduled`` names the cost model's ``shape`` and ``hardware`` when the
    scheduler ran (``None``: sequential replay).
    """
    if provider != "vllm":
        notes = [PROVIDER_NOTE.format(provider=provider)]
    elif scheduled is not None:
        notes = [SCHEDULED_NOTE.format(**scheduled)]
    else:
        notes = [SEQUENTIAL_NOTE]
    if compute_model is not None:
        notes.append(COMPUTE_NOTE.format(model=compute_model))
    if breakpoints_used:
        notes.append(BREAKPOINT_NOTE.format(provider=provider if provider == "anthropic" else "openai (GPT-5.6 and later)"))
    if hit_cap == "none":
        notes.append(NO_CAP_NOTE)
    if tokenizers:  # any format whose text kvcache renders and tokenizes itself
        notes.append(TOKENIZER_NOTE.format(tokenizer=" and ".join(tokenizers)))
    return notes


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
    implementation: str = "c"
    billing: BilledComparison | None = None
    provider: str = "vllm"
    warnings: list[str] | None = None
    scheduler: dict[str, Any] | None = None  # LatencyReport.section(); None in sequential replay
    compute: dict[str, Any] | None = None  # --compute: model, pool, wall-clock figures
    verify: dict[str, Any] | None = None  # --verify: {"requests", "max_rel_err"}

    def summary(self) -> dict[str, Any]:
        t = self.hit_rates.total
        return {
            "trace": self.trace,
            "input_format": self.input_format,
            "mode": "scheduled" if self.scheduler is not None else "sequential",
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
            "peak_cached_blocks": self.stats.peak_cached_blocks if self.provider == "vllm" else None,
            "rejected_requests": self.stats.rejected_requests,
            "skipped_lines": len(self.skipped),
            **(self.billing or BilledComparison()).billed_fields(),
            "predicted_vs_billed": (self.billing or BilledComparison()).summary(),
            "hash": self.config.hash_algo,
            "free_order": self.config.free_order,
            "hit_cap": self.hit_cap,
            "engine": self.implementation,
            "provider": self.provider,
            "definitions": DEFINITIONS,
            "scheduler": self.scheduler,
            "compute": self.compute,
            "verify": self.verify,
            "notes": self.notes,
            "warnings": self.warnings or [],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "sessions": self.hit_rates.session_rows(),
            "orgs": self.hit_rates.org_rows(),
            "skipped": self.skipped,
        }
