"""Latency percentiles of a scheduled replay: nearest-rank TTFT and E2E.

Rejected requests never ran, so they have no latency and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kvcache.engine.request import RequestResult


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile: the smallest value with at least
    ``p`` percent of the values at or below it (``sorted[ceil(p/100 * n) - 1]``).

    Nearest rank always returns an observed value (no interpolation).

    Raises:
        ValueError: no values, or ``p`` outside (0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    return ordered[max(math.ceil(p * len(ordered) / 100), 1) - 1]


@dataclass(slots=True)
class LatencySummary:
    """Nearest-rank percentiles of TTFT and E2E over the requests that ran.

    ``ttft_s`` and ``e2e_s`` map ``"p50"``, ``"p90"``, ``"p99"`` (or the levels asked
    for) to seconds; both are empty when no request ran.
    """

    count: int
    ttft_s: dict[str, float] = field(default_factory=dict)
    e2e_s: dict[str, float] = field(default_factory=dict)


def latency_summary(results: Iterable[RequestResult], levels: Sequence[float] = (50, 90, 99)) -> LatencySummary:
    """Percentiles (:func:`percentile`) of TTFT and E2E; rejected requests are left out."""
    ttft: list[float] = []
    e2e: list[float] = []
    for r in results:
        if r.rejected or r.ttft_s is None or r.e2e_s is None:
            continue
        ttft.append(r.ttft_s)
        e2e.append(r.e2e_s)
    out = LatencySummary(len(ttft))
    if ttft:
        ttft.sort()
        e2e.sort()
        for p in levels:
            key = f"p{p:g}"
            out.ttft_s[key] = percentile(ttft, p)
            out.e2e_s[key] = percentile(e2e, p)
    return out
