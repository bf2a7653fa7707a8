"""Hit-rate aggregation over engine results: totals, per session and per org.

Definitions (printed next to every figure that uses them):

* ``token_hit_rate`` = sum of cached prompt tokens / sum of prompt tokens
  (vLLM's ``prefix_cache_hits / prefix_cache_queries``).
* ``block_hit_rate`` = sum of leading hit blocks / sum of full prompt blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvcache.engine.request import RequestResult

DEFINITIONS = {
    "token_hit_rate": "cached prompt tokens / prompt tokens, summed over requests (vLLM's definition)",
    "block_hit_rate": "leading hit blocks / full prompt blocks, summed over requests",
    "billed_token_hit_rate": "billed cached tokens / billed prompt tokens, over calls whose usage the trace records",
    "per_call_abs_error_share": "sum of |predicted read - billed read| / sum of billed prompt tokens (predictions scaled per call by billed/our prompt tokens)",
    "uncached_error": "(predicted uncached - billed uncached) / billed uncached",
}


def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass(slots=True)
class Tally:
    """Sums over a group of requests."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    blocks: int = 0
    hit_blocks: int = 0
    rejected: int = 0

    def add(self, r: RequestResult) -> None:
        self.requests += 1
        self.prompt_tokens += r.prompt_tokens
        self.cached_tokens += r.cached_tokens
        self.blocks += r.blocks
        self.hit_blocks += r.hit_blocks
        self.rejected += r.rejected

    @property
    def token_hit_rate(self) -> float:
        return _rate(self.cached_tokens, self.prompt_tokens)

    @property
    def block_hit_rate(self) -> float:
        return _rate(self.hit_blocks, self.blocks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "token_hit_rate": round(self.token_hit_rate, 6),
            "blocks": self.blocks,
            "hit_blocks": self.hit_blocks,
            "block_hit_rate": round(self.block_hit_rate, 6),
        }


@dataclass
class HitRateReport:
    """Running totals; feed results with :meth:`add` and read the groups after."""

    total: Tally = field(default_factory=Tally)
    sessions: dict[tuple[str | None, str], Tally] = field(default_factory=dict)
    orgs: dict[str | None, Tally] = field(default_factory=dict)

    def add(self, r: RequestResult) -> None:
        self.total.add(r)
        if r.session_id is not None:
            key = (r.org, r.session_id)
            t = self.sessions.get(key)
            if t is None:
                t = self.sessions[key] = Tally()
            t.add(r)
        o = self.orgs.get(r.org)
        if o is None:
            o = self.orgs[r.org] = Tally()
        o.add(r)

    def session_rows(self) -> list[dict[str, Any]]:
        """One row per session, ordered by uncached prompt tokens (the costliest first)."""
        rows = [
            {"session_id": sid, "org": org, **t.as_dict()}
            for (org, sid), t in self.sessions.items()
        ]
        rows.sort(key=lambda d: (-(d["prompt_tokens"] - d["cached_tokens"]), str(d["session_id"])))
        return rows

    def org_rows(self) -> list[dict[str, Any]]:
        """One row per org (``null`` when the trace names none), costliest first."""
        rows = [{"org": org, **t.as_dict()} for org, t in self.orgs.items()]
        rows.sort(key=lambda d: (-(d["prompt_tokens"] - d["cached_tokens"]), str(d["org"])))
        return rows
