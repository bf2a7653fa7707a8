"""Continuous batching on a simulated clock, following vLLM v1's scheduler.

One :meth:`Scheduler.step` is one engine step::

    token budget = max_num_batched_tokens
    1. RUNNING, in order: each asks for (its tokens so far) - (computed), capped by
       the budget. No blocks? Preempt the NEWEST running request (free its blocks,
       computed = 0, to the FRONT of waiting) and retry; if that was the request
       itself, stop scheduling running requests.
    2. WAITING, in order, only if nothing was preempted in 1: while budget > 0 and
       fewer than max_num_seqs run: prefix-cache lookup, then the rest of the
       prompt (a chunk of it with chunked prefill). No blocks: stop admitting.
    3. Execute: computed += scheduled; a request whose computed tokens reach its
       length samples one token. The clock advances by the cost model's step time.

A request's tokens, as positions (P prompt tokens, N outputs)::

    |<------------ prompt P ------------>|<-- outputs generated so far (g) -->|
    [ hit (lookup) ][ prefill chunks ... ][ decode: one token per step ...    ]
                                         ^ output 1 is sampled from the last prompt
                                           position; output g+1 from position P+g-1

KV exists for ``P + N - 1`` tokens at the end (the last sample is never computed),
as :attr:`Request.num_kv_tokens` says. A request preempted after ``g`` outputs
resumes as a prompt of ``P + g`` tokens: its lookup may hit up to its normal cap
plus ``g`` (``P + g - 1`` under vLLM's rule).

A conversation's turns cannot overlap: the next turn re-sends the previous
turn's reply, so it cannot be sent before that reply exists. A request whose
session still has a request in flight is held back and joins the waiting queue
when that one finishes (its TTFT and E2E count from then). Requests without a
session are independent.

Requests are pulled lazily from the input as the clock reaches their arrival, so
memory follows the requests in flight, not the length of the trace. Results come
out when requests finish (rejections at arrival), not in arrival order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator

from kvcache.engine.config import CacheConfig
from kvcache.engine.cost_model import FixedStepCost, StepCostModel, StepWork
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.latency_stats import LatencySummary, latency_summary, percentile
from kvcache.engine.replay import ReplayStats
from kvcache.engine.request import Request, RequestResult
from kvcache.engine.sched_config import SchedulerConfig
from kvcache.engine.sched_types import ScheduledBatch, ScheduledChunk, SchedulerStats, StepExecutor

# The data types and latency helpers live in their own modules; importing them
# from here keeps working.
__all__ = [
    "LatencySummary",
    "ScheduledBatch",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerStats",
    "StepExecutor",
    "latency_summary",
    "percentile",
]


class _Seq:
    """Scheduler-side state of one request in flight (the Request stays as given)."""

    __slots__ = ("req", "length", "target", "generated", "cap", "hit_blocks", "prefill_end",
                 "high_water", "preemptions", "ttft", "done", "reported_id", "ready")

    def __init__(self, req: Request, reported_id: str | None = None) -> None:
        self.req = req
        self.reported_id = req.request_id if reported_id is None else reported_id
        self.ready = req.arrival  # when it could be sent: arrival, or its previous turn's finish
        self.length = req.kv_prompt_tokens  # tokens so far: prompt + outputs generated
        self.target = max(req.output_tokens, 1)
        self.generated = 0
        self.cap = req.hit_cap_tokens
        self.hit_blocks = -1  # first admission's lookup, for the result
        self.prefill_end = 0  # length at the latest admission
        self.high_water = 0  # most tokens ever computed (recompute accounting)
        self.preemptions = 0
        self.ttft: float | None = None
        self.done = False


class Scheduler:
    """vLLM-v1-style continuous batching over a :class:`KVCacheManager`.

    ``fast_decode`` (class attribute, on) skips ``allocate_slots`` for a decode
    token that stays inside its last block, where the call would change nothing;
    tests turn it off to check that the results are identical.

    Args:
        cache_config: the prefix cache and pool size.
        sched_config: budgets (default: vLLM's :class:`SchedulerConfig`).
        cost_model: prices each step; ``None`` is :class:`FixedStepCost` (10 ms).
        executor: runs each scheduled batch, e.g. a real model (``None``: simulate).
    """

    fast_decode = True
    implementation = "python"  # the scheduler drives the pure-Python KVCacheManager

    def __init__(
        self,
        cache_config: CacheConfig,
        sched_config: SchedulerConfig | None = None,
        cost_model: StepCostModel | None = None,
        executor: StepExecutor | None = None,
    ) -> None:
        self.cache_config = cache_config
        self.config = sched_config or SchedulerConfig()
        self.cost_model = cost_model if cost_model is not None else FixedStepCost()
        self.executor = executor
        self.manager = KVCacheManager(cache_config)
        self.block_size = cache_config.block_size
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self.clock = 0.0
        self.stats = SchedulerStats()
        self.kv_blocks_in_use = 0  # distinct blocks held by running requests
        self._in_flight: set[str] = set()
        self._last_arrival = -math.inf
        # session -> its turns held back while an earlier turn is in flight
        self._held: dict[str, deque[_Seq]] = {}

    # ------------------------------------------------------------------ arrivals
    def add_request(self, req: Request) -> RequestResult | None:
        """Queue a request that has arrived; returns its result if it is rejected.

        A request is rejected when it can never fit: its ``P + N - 1`` KV tokens need
        more blocks than the whole pool, or, without chunked prefill, more tokens
        than one step's budget (vLLM refuses such a ``max_model_len`` at start-up).

        Raises:
            ValueError: arrivals out of order. (A request id already in flight is
                run under a private id; its result keeps the trace's id.)
        """
        if req.arrival < self._last_arrival:
            raise ValueError(
                f"request {req.request_id!r} arrives at {req.arrival} before the previous one "
                f"({self._last_arrival}); the scheduler needs requests in arrival order"
            )
        self._last_arrival = req.arrival
        if self.stats.first_arrival is None:
            self.stats.first_arrival = req.arrival
        reported_id = req.request_id
        if reported_id in self._in_flight:
            # Traces do repeat ids (two log files, retried calls). The pool and the
            # executor key state by id, so the repeat runs under a private one and
            # its result carries the id the trace gave it.
            k = 2
            while f"{reported_id}#{k}" in self._in_flight:
                k += 1
            req.request_id = f"{reported_id}#{k}"
        kv = req.num_kv_tokens
        usable = self.cache_config.usable_blocks
        if (usable is not None and -(-kv // self.block_size) > usable) or (
            not self.config.enable_chunked_prefill and kv > self.config.max_num_batched_tokens
        ):
            self.stats.rejected += 1
            blocks = req.kv_prompt_tokens // self.block_size
            req.request_id = reported_id
            return RequestResult(
                reported_id, req.session_id, req.org, req.arrival, req.prompt_tokens, 0, 0, blocks,
                0 if blocks else None, True, req.billed_prompt_tokens, req.billed_cached_tokens,
            )
        self._in_flight.add(req.request_id)
        seq = _Seq(req, reported_id)
        session = req.session_id
        if session is not None:
            held = self._held.get(session)
            if held is not None:  # an earlier turn is in flight: wait for its reply
                held.append(seq)
                self.stats.held_back += 1
                return None
            self._held[session] = deque()
        self.waiting.append(seq)
        return None

    @property
    def replay_stats(self) -> ReplayStats:
        """The pool figures in the sequential replayer's terms, for the shared report."""
        s = self.stats
        return ReplayStats(self.manager.pool.num_evicted, s.rejected, s.peak_cached_blocks)

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting or self._held)

    def run(self, requests: Iterable[Request]) -> Iterator[RequestResult]:
        """Schedule ``requests`` (in arrival order) to the end, yielding each result.

        When nothing is queued the clock jumps to the next arrival.
        """
        it = iter(requests)
        nxt = next(it, None)
        while True:
            while nxt is not None and nxt.arrival <= self.clock:
                rejected = self.add_request(nxt)
                if rejected is not None:
                    yield rejected
                nxt = next(it, None)
            if not self.running and not self.waiting:
                if nxt is None:
                    break
                self.clock = max(self.clock, nxt.arrival)
                continue
            yield from self.step()
        self.stats.evictions = self.manager.pool.num_evicted

    # ------------------------------------------------------------------ one step
    def _held_blocks_freed(self, req: Request) -> int:
        """Blocks of ``req`` that freeing it returns to the pool (no other holder)."""
        ref = self.manager.pool.ref_cnt
        return sum(1 for b in self.manager.req_to_blocks.get(req.request_id, ()) if ref[b] == 1)

    def _preempt(self, seq: _Seq) -> None:
        req = seq.req
        self.kv_blocks_in_use -= self._held_blocks_freed(req)
        self.manager.free(req)
        req.num_computed_tokens = 0
        seq.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(seq)
        if self.executor is not None:
            self.executor.preempted(req)

    def step(self) -> list[RequestResult]:
        """Schedule, execute and account one engine step; returns the requests it finished."""
        mgr = self.manager
        allocate = mgr.allocate_slots
        bs = self.block_size
        cfg = self.config
        threshold = cfg.long_prefill_token_threshold
        budget = cfg.max_num_batched_tokens
        running, waiting = self.running, self.waiting
        scheduled: list[tuple[_Seq, int, int]] = []  # (seq, start, new tokens)
        preempted = False
        fast = self.fast_decode

        # 1. Running requests, oldest first.
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            req = seq.req
            c = req.num_computed_tokens
            n = seq.length - c
            if 0 < threshold < n:
                n = threshold
            if n > budget:
                n = budget
            if n == 0:
                i += 1
                continue
            # Fast path: a decode token inside the last block neither needs a block
            # nor completes one, so allocate_slots would change nothing.
            if not (fast and n == 1 and c % bs and (c + 1) % bs):
                while True:
                    new = allocate(req, n)
                    if new is not None:
                        self.kv_blocks_in_use += len(new)
                        break
                    victim = running.pop()
                    self._preempt(victim)
                    preempted = True
                    if victim is seq:
                        break
                if new is None:
                    break
            scheduled.append((seq, c, n))
            budget -= n
            i += 1

        # 2. Waiting requests, in order, unless this step preempted.
        if not preempted:
            ref = mgr.pool.ref_cnt
            while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                seq = waiting[0]
                req = seq.req
                assert req.num_computed_tokens == 0, f"waiting request {req.request_id} holds computed tokens"
                if seq.generated:
                    req.hit_cap_tokens = seq.cap + seq.generated  # resumed: prompt + outputs so far
                try:
                    hits, hit_tokens = mgr.get_computed_blocks(req)
                finally:
                    req.hit_cap_tokens = seq.cap
                n = seq.length - hit_tokens
                if 0 < threshold < n:
                    n = threshold
                if not cfg.enable_chunked_prefill and n > budget:
                    break
                if n > budget:
                    n = budget
                revived = sum(1 for b in hits if ref[b] == 0)
                new = allocate(req, n, hits, hit_tokens)
                if new is None:
                    mgr.free(req)  # drop the empty block table allocate_slots registered
                    break
                self.kv_blocks_in_use += revived + len(new)
                waiting.popleft()
                running.append(seq)
                if seq.hit_blocks < 0:
                    seq.hit_blocks = len(hits)
                self.stats.cached_tokens += hit_tokens
                seq.prefill_end = seq.length
                scheduled.append((seq, hit_tokens, n))
                budget -= n

        stats = self.stats
        if len(running) > stats.peak_running:
            stats.peak_running = len(running)
        if len(waiting) > stats.peak_waiting:
            stats.peak_waiting = len(waiting)
        if self.kv_blocks_in_use > stats.peak_kv_blocks:
            stats.peak_kv_blocks = self.kv_blocks_in_use
        if len(mgr.pool.cached) > stats.peak_cached_blocks:
            stats.peak_cached_blocks = len(mgr.pool.cached)
        if not scheduled:
            # Only a step that preempted every running request schedules nothing;
            # the next step admits from waiting.
            assert preempted, "a step with queued requests scheduled nothing and preempted nothing"
            return []
        return self._execute(scheduled)

    def _execute(self, scheduled: list[tuple[_Seq, int, int]]) -> list[RequestResult]:
        stats = self.stats
        work = StepWork()
        tokens = ctx = pairs = sampled = 0
        for seq, s, n in scheduled:
            tokens += n
            ctx += s
            pairs += n * s + n * (n + 1) // 2
            sampled += s + n == seq.length
        work.num_tokens, work.num_seqs, work.num_sampled = tokens, len(scheduled), sampled
        work.context_tokens, work.attention_pairs = ctx, pairs
        if self.executor is not None:
            table = self.manager.req_to_blocks
            chunks = [
                ScheduledChunk(seq.req, s, n, list(table[seq.req.request_id]), s + n == seq.length)
                for seq, s, n in scheduled
            ]
            self.executor.execute(ScheduledBatch(stats.steps, self.clock, chunks))
        dt = self.cost_model.step_time(work)
        self.clock += dt
        stats.busy_s += dt
        stats.steps += 1

        now = self.clock
        finished: list[RequestResult] = []
        prefill = recomputed = 0
        for seq, s, n in scheduled:
            end = s + n
            seq.req.num_computed_tokens = end
            if s < seq.prefill_end:
                prefill += min(end, seq.prefill_end) - s
            if s < seq.high_water:
                recomputed += min(end, seq.high_water) - s
            if end > seq.high_water:
                seq.high_water = end
            if end == seq.length:  # reached its last token: one output is sampled
                seq.generated += 1
                seq.length += 1
                if seq.generated == 1:
                    seq.ttft = now - seq.ready
                if seq.generated >= seq.target:
                    finished.append(self._finish(seq, now))
        stats.prefill_tokens += prefill
        stats.decode_tokens += tokens - prefill
        stats.recomputed_tokens += recomputed
        if finished:
            self.running[:] = [seq for seq in self.running if not seq.done]
        return finished

    def _finish(self, seq: _Seq, now: float) -> RequestResult:
        req = seq.req
        seq.done = True
        self.kv_blocks_in_use -= self._held_blocks_freed(req)
        self.manager.free(req)
        self._in_flight.discard(req.request_id)
        if self.executor is not None:
            self.executor.finish(req)
        session = req.session_id
        if session is not None:
            held = self._held[session]
            if held:  # the session's next turn can be sent now
                nxt = held.popleft()
                nxt.ready = now
                self.waiting.append(nxt)
            else:
                del self._held[session]
        stats = self.stats
        stats.finished += 1
        assert stats.first_arrival is not None
        stats.makespan_s = max(stats.makespan_s, now - stats.first_arrival)
        stats.evictions = self.manager.pool.num_evicted
        bs = self.block_size
        n_hit = seq.hit_blocks
        blocks = req.kv_prompt_tokens // bs
        return RequestResult(
            seq.reported_id, req.session_id, req.org, req.arrival, req.prompt_tokens,
            min(n_hit * bs, req.prompt_tokens), n_hit, blocks, n_hit if n_hit < blocks else None, False,
            req.billed_prompt_tokens, req.billed_cached_tokens,
            ttft_s=seq.ttft, e2e_s=now - seq.ready, preemptions=seq.preemptions,
        )
