"""What the scheduler hands out and gathers: scheduled chunks and batches, the
executor hook, and the run's statistics.

A step's batch, for the :class:`StepExecutor` that runs it::

    ScheduledBatch(step, time, chunks=[running..., newly admitted...])
        ScheduledChunk(request, start, num_tokens, block_ids, samples)
            computes positions start .. start + num_tokens - 1

Pure data: no scheduling logic lives here (see :mod:`kvcache.engine.scheduler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kvcache.engine.request import Request


@dataclass(slots=True)
class ScheduledChunk:
    """One request's share of a step.

    Attributes:
        request: the request (its ``token_ids`` hold prompt + recorded outputs).
        start: tokens computed before this step, prefix-cache hits included; the
            chunk computes positions ``start .. start + num_tokens - 1``.
        num_tokens: new tokens computed this step (0 only when a lookup hit every
            token, which a hit cap of ``prompt - 1`` never allows).
        block_ids: the request's whole block table after this step's allocation.
        samples: the chunk ends at the request's last token, so a token is sampled
            from its last position.
    """

    request: Request
    start: int
    num_tokens: int
    block_ids: list[int]
    samples: bool


@dataclass(slots=True)
class ScheduledBatch:
    """What one step runs: handed to :meth:`StepExecutor.execute`.

    Attributes:
        step: 0-based step index.
        time: the simulated clock when the step starts (seconds).
        chunks: running requests first (queue order), then newly admitted ones.
    """

    step: int
    time: float
    chunks: list[ScheduledChunk]


class StepExecutor(Protocol):
    """Runs the model for the scheduler's steps (e.g. a real model on a paged KV cache)."""

    def execute(self, batch: ScheduledBatch) -> None: ...

    def finish(self, request: Request) -> None: ...

    def preempted(self, request: Request) -> None: ...


@dataclass(slots=True)
class SchedulerStats:
    """Figures gathered while scheduling.

    Attributes:
        steps, preemptions, rejected, finished: counts.
        peak_kv_blocks: most distinct blocks held by running requests after a
            step's allocations (shared hit blocks count once).
        peak_running, peak_waiting: longest queues seen.
        prefill_tokens: tokens computed to (re)build prompts, recompute after
            preemption included; ``decode_tokens`` the one-per-step rest.
        cached_tokens: prefill tokens skipped thanks to prefix-cache hits, summed
            over every admission (resumes after preemption included).
        recomputed_tokens: tokens computed again because a preemption dropped them.
        evictions: cached hashes dropped when their block was reallocated.
        busy_s: simulated time spent in steps; ``makespan_s``: first arrival to
            last finish.
    """

    steps: int = 0
    preemptions: int = 0
    rejected: int = 0
    finished: int = 0
    peak_kv_blocks: int = 0
    peak_running: int = 0
    peak_waiting: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cached_tokens: int = 0
    recomputed_tokens: int = 0
    evictions: int = 0
    busy_s: float = 0.0
    makespan_s: float = 0.0
    first_arrival: float | None = None
    peak_cached_blocks: int = 0  # most distinct hashes cached at once (after a step's allocations)
    held_back: int = 0  # turns that waited for their session's previous turn to finish
