"""Predicted against billed: how far the engine's cache reads are from the bill.

Our token counts come from our tokenizer and template; the provider counts its
own. Each call is therefore calibrated on its own: the predicted cached tokens
are scaled by that call's ``billed prompt / our prompt`` ratio, which converts
units without touching *which* prefix matched. The overall ratio is reported as
``calibration_ratio``. Then:

* ``per_call_abs_error_share`` = Σ |predicted read − billed read| / Σ billed prompt;
* ``uncached_error`` = (predicted uncached − billed uncached) / billed uncached,
  with uncached = billed prompt − read.

Only calls whose usage the trace records take part.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from kvcache.engine.request import RequestResult


def calibrated_prediction(r: RequestResult) -> float | None:
    """The call's predicted cached tokens in the provider's units, or ``None`` if unbilled."""
    if r.billed_prompt_tokens is None or r.billed_cached_tokens is None or r.prompt_tokens <= 0:
        return None
    return r.cached_tokens * r.billed_prompt_tokens / r.prompt_tokens


@dataclass
class BilledComparison:
    """Running sums over billed calls, plus the calls that disagree most."""

    worst_kept: int = 10
    calls: int = 0
    our_prompt_tokens: int = 0
    billed_prompt_tokens: int = 0
    billed_cached_tokens: int = 0
    predicted_cached_tokens: float = 0.0
    abs_error: float = 0.0
    _worst: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, r: RequestResult) -> None:
        predicted = calibrated_prediction(r)
        if predicted is None:
            return
        billed_prompt, billed_read = r.billed_prompt_tokens, r.billed_cached_tokens
        assert billed_prompt is not None and billed_read is not None
        self.calls += 1
        self.our_prompt_tokens += r.prompt_tokens
        self.billed_prompt_tokens += billed_prompt
        self.billed_cached_tokens += billed_read
        self.predicted_cached_tokens += predicted
        err = abs(predicted - billed_read)
        self.abs_error += err
        row = {"request_id": r.request_id, "session_id": r.session_id, "predicted_cached_tokens": round(predicted),
               "billed_cached_tokens": billed_read, "billed_prompt_tokens": billed_prompt,
               "first_miss_block": r.first_miss_block}
        item = (err, -self.calls, row)  # the call index breaks ties: earlier calls first
        if len(self._worst) < self.worst_kept:
            heapq.heappush(self._worst, item)
        else:
            heapq.heappushpop(self._worst, item)

    def summary(self) -> dict[str, Any] | None:
        """The ``predicted_vs_billed`` object, or ``None`` when no call was billed."""
        if not self.calls:
            return None
        billed_uncached = self.billed_prompt_tokens - self.billed_cached_tokens
        predicted_uncached = self.billed_prompt_tokens - self.predicted_cached_tokens
        return {
            "calls": self.calls,
            "calibration_ratio": round(self.billed_prompt_tokens / self.our_prompt_tokens, 6) if self.our_prompt_tokens else None,
            "predicted_cached_tokens": round(self.predicted_cached_tokens),
            "predicted_token_hit_rate": round(self.predicted_cached_tokens / self.billed_prompt_tokens, 6),
            "per_call_abs_error_share": round(self.abs_error / self.billed_prompt_tokens, 6),
            "uncached_error": round((predicted_uncached - billed_uncached) / billed_uncached, 6) if billed_uncached else None,
            "largest_disagreements": [row for _, _, row in sorted(self._worst, key=lambda t: (-t[0], -t[1]))],
        }

    def billed_fields(self) -> dict[str, Any]:
        """The summary's billed keys (null when the trace records no usage)."""
        if not self.calls:
            return {"billed_prompt_tokens": None, "billed_cached_tokens": None, "billed_token_hit_rate": None}
        return {
            "billed_prompt_tokens": self.billed_prompt_tokens,
            "billed_cached_tokens": self.billed_cached_tokens,
            "billed_token_hit_rate": round(self.billed_cached_tokens / self.billed_prompt_tokens, 6),
        }
