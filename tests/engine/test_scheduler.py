"""The continuous-batching scheduler, in the style of vLLM's tests/v1/core/test_scheduler.py.

Tiny pools (block size 4, block 0 is the null block), steps narrated in comments,
exact chunks, block tables and free queues (head first) after each step. Unless a
test says otherwise every step takes 1 s of simulated time (``FixedStepCost(1.0)``),
so the clock counts steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kvcache.engine.config import CacheConfig
from kvcache.engine.cost_model import CostConfig, FixedStepCost, RooflineCostModel
from kvcache.engine.errors import ConfigError
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.request import Request, RequestResult
from kvcache.engine.sched_config import SchedulerConfig
from kvcache.engine.scheduler import (
    LatencySummary,
    ScheduledBatch,
    Scheduler,
    latency_summary,
    percentile,
)

BS = 4


def make_request(
    request_id: str,
    prompt: Sequence[int],
    output: Sequence[int] = (),
    arrival: float = 0.0,
    block_size: int = BS,
) -> Request:
    """A token request: keys cover prompt + output; the hit is capped at len(prompt) - 1."""
    tokens = list(prompt) + list(output)
    return Request(
        request_id=request_id,
        block_keys=hash_token_blocks(tokens, block_size, "xxh3_128"),
        prompt_tokens=len(prompt),
        kv_prompt_tokens=len(prompt),
        output_tokens=len(output),
        hit_cap_tokens=len(prompt) - 1,
        arrival=arrival,
    )


def outputs(n: int, base: int = 1000) -> list[int]:
    return list(range(base, base + n))


class Recorder:
    """A StepExecutor that writes down what it is told."""

    def __init__(self) -> None:
        self.batches: list[ScheduledBatch] = []
        self.events: list[tuple[str, str, int]] = []  # (kind, request id, batches seen so far)

    def execute(self, batch: ScheduledBatch) -> None:
        self.batches.append(batch)

    def finish(self, request: Request) -> None:
        self.events.append(("finish", request.request_id, len(self.batches)))

    def preempted(self, request: Request) -> None:
        self.events.append(("preempted", request.request_id, len(self.batches)))

    def chunks(self, step: int) -> list[tuple[str, int, int, bool]]:
        """(request id, start, new tokens, samples) of a step's chunks."""
        return [(c.request.request_id, c.start, c.num_tokens, c.samples) for c in self.batches[step].chunks]

    def per_request(self, rid: str) -> list[tuple[int, int]]:
        return [(c.start, c.num_tokens) for b in self.batches for c in b.chunks if c.request.request_id == rid]


def scheduler(
    num_blocks: int | None = None,
    budget: int = 1000,
    max_num_seqs: int = 256,
    chunked: bool = True,
    threshold: int = 0,
    recorder: Recorder | None = None,
) -> Scheduler:
    return Scheduler(
        CacheConfig(block_size=BS, num_blocks=num_blocks),
        SchedulerConfig(
            max_num_batched_tokens=budget,
            max_num_seqs=max_num_seqs,
            enable_chunked_prefill=chunked,
            long_prefill_token_threshold=threshold,
        ),
        FixedStepCost(1.0),
        recorder,
    )


def by_id(results: list[RequestResult]) -> dict[str, RequestResult]:
    return {r.request_id: r for r in results}


# ------------------------------------------------------------------ admission
def test_fifo_admission_waits_for_arrival_and_respects_max_num_seqs() -> None:
    rec = Recorder()
    sched = scheduler(max_num_seqs=2, recorder=rec)
    reqs = [
        make_request("A", range(5), outputs(2), arrival=0.0),
        make_request("B", range(10, 16), outputs(3), arrival=0.0),
        make_request("C", range(20, 23), outputs(1), arrival=0.5),
        make_request("D", range(30, 34), outputs(1), arrival=10.0),
    ]
    results = list(sched.run(reqs))
    # Step 0 (t 0 -> 1): A and B have arrived; C (t 0.5) has not, so it is not admitted.
    assert rec.batches[0].time == 0.0
    assert rec.chunks(0) == [("A", 0, 5, True), ("B", 0, 6, True)]
    # Step 1 (t 1 -> 2): C has arrived, but A and B fill max_num_seqs = 2.
    # Running requests decode; A samples its 2nd and last token.
    assert rec.chunks(1) == [("A", 5, 1, True), ("B", 6, 1, True)]
    # Step 2 (t 2 -> 3): A is gone, so C is admitted after the running B.
    assert rec.chunks(2) == [("B", 7, 1, True), ("C", 0, 3, True)]
    # Nothing runs and D arrives at t 10: the clock jumps there.
    assert rec.batches[3].time == 10.0
    assert rec.chunks(3) == [("D", 0, 4, True)]
    assert len(rec.batches) == 4
    # Results come out as requests finish; within a step, in scheduling order.
    assert [r.request_id for r in results] == ["A", "B", "C", "D"]
    got = {r.request_id: (r.ttft_s, r.e2e_s, r.preemptions) for r in results}
    assert got == {"A": (1.0, 2.0, 0), "B": (1.0, 3.0, 0), "C": (2.5, 2.5, 0), "D": (1.0, 1.0, 0)}
    assert sched.stats.steps == 4
    assert sched.stats.peak_running == 2
    assert sched.stats.makespan_s == 11.0
    assert sched.stats.busy_s == 4.0
    assert rec.events == [("finish", "A", 2), ("finish", "B", 3), ("finish", "C", 3), ("finish", "D", 4)]


def test_arrivals_out_of_order_are_refused() -> None:
    sched = scheduler()
    reqs = [make_request("A", range(5), arrival=2.0), make_request("B", range(5), arrival=1.0)]
    with pytest.raises(ValueError, match="arrival order"):
        list(sched.run(reqs))


def test_a_sessions_next_turn_waits_for_the_previous_reply() -> None:
    # Both turns arrive at t=0 (a trace without times), but turn 2 re-sends turn 1's
    # reply, so it is held back until turn 1 finishes, and then hits its blocks.
    sched = scheduler()
    t1 = make_request("t1", range(8), outputs(5))
    t2 = make_request("t2", list(range(8)) + list(outputs(5))[:4] + [50, 51, 52])
    t1.session_id = t2.session_id = "s"
    first = sched.add_request(t1), sched.add_request(t2)
    assert first == (None, None)
    assert [q.req.request_id for q in sched.waiting] == ["t1"]  # t2 is held, not waiting
    assert sched.stats.held_back == 1
    results = []
    while sched.has_unfinished():
        results.extend(sched.step())
    assert [r.request_id for r in results] == ["t1", "t2"]
    # t1 holds 8 + 5 - 1 = 12 KV tokens = 3 full blocks of 4; t2 (15 tokens) hits all 3.
    assert results[1].cached_tokens == 12
    # t2's latency counts from t1's finish, when it could first be sent.
    assert results[1].ttft_s is not None and results[1].ttft_s < results[0].e2e_s


def test_scheduler_clock_follows_the_roofline() -> None:
    # Worked by hand in test_cost_model.py: a 1000-token prefill of Llama 3.1 8B on
    # an H100 SXM is compute-bound, the next decode step memory-bound.
    cm = RooflineCostModel("llama-3.1-8b", "h100-sxm", CostConfig(mfu=1.0, mbu=1.0, step_overhead_s=0.0))
    sched = Scheduler(CacheConfig(block_size=16), SchedulerConfig(), cm)
    req = Request("a", [], 1000, 1000, 2, 999)
    [res] = list(sched.run([req]))
    prefill = (13_959_176_192_000 + 1_050_673_152 + 524_288 * 500_500) / 989.5e12
    decode = 15_141_060_608 / 3.35e12
    assert res.ttft_s == pytest.approx(prefill)
    assert res.e2e_s == pytest.approx(prefill + decode)


def test_default_cost_is_a_fixed_10ms_step() -> None:
    sched = Scheduler(CacheConfig(block_size=BS))
    [res] = list(sched.run([make_request("A", range(6), outputs(3))]))
    # Prefill (step 1), then two decode steps.
    assert sched.stats.steps == 3
    assert res.ttft_s == pytest.approx(0.010)
    assert res.e2e_s == pytest.approx(0.030)


# ------------------------------------------------------------------ chunked prefill
def test_chunked_prefill_splits_a_long_prompt_at_the_budget() -> None:
    rec = Recorder()
    sched = scheduler(budget=32, recorder=rec)
    results = list(sched.run([make_request("A", range(80), outputs(2))]))
    # 80 tokens under a 32-token budget: 32, 32, then 16, which reaches the last
    # prompt token and samples; then one decode step.
    assert rec.per_request("A") == [(0, 32), (32, 32), (64, 16), (80, 1)]
    assert [c.samples for b in rec.batches for c in b.chunks] == [False, False, True, True]
    # Its block table grows with each chunk: 8, 16, 20, 21 tokens -> 8, 16, 20, 21 // 4.
    assert [b.chunks[0].block_ids for b in rec.batches] == [
        list(range(1, 9)), list(range(1, 17)), list(range(1, 21)), list(range(1, 22)),
    ]
    # TTFT is the end of the step that sampled the first token.
    assert results[0].ttft_s == 3.0 and results[0].e2e_s == 4.0
    assert (sched.stats.prefill_tokens, sched.stats.decode_tokens) == (80, 1)


def test_chunked_prefill_budget_goes_to_running_requests_first() -> None:
    rec = Recorder()
    sched = scheduler(budget=32, recorder=rec)
    list(sched.run([make_request("A", range(80), outputs(2)), make_request("B", range(100, 120), outputs(2))]))
    # Step 0: A takes the whole budget; B is not admitted (budget 0).
    assert rec.chunks(0) == [("A", 0, 32, False)]
    # Step 1: A (running) first: 32 more; still nothing left for B.
    assert rec.chunks(1) == [("A", 32, 32, False)]
    # Step 2: A's last 16 prompt tokens; B gets the remaining 16 of its 20.
    assert rec.chunks(2) == [("A", 64, 16, True), ("B", 0, 16, False)]
    # Step 3: A decodes; B finishes its prompt (4 tokens) and samples.
    assert rec.chunks(3) == [("A", 80, 1, True), ("B", 16, 4, True)]
    # Step 4: B decodes its second token.
    assert rec.chunks(4) == [("B", 20, 1, True)]


def test_without_chunked_prefill_a_prompt_waits_until_it_fits_whole() -> None:
    rec = Recorder()
    sched = scheduler(budget=32, chunked=False, recorder=rec)
    list(sched.run([make_request("A", range(20), outputs(2)), make_request("B", range(100, 120), outputs(2))]))
    # Step 0: A's 20 tokens leave 12; B's 20 do not fit, so B waits (not chunked).
    assert rec.chunks(0) == [("A", 0, 20, True)]
    # Step 1: A's decode leaves 31: B is admitted whole.
    assert rec.chunks(1) == [("A", 20, 1, True), ("B", 0, 20, True)]
    assert rec.chunks(2) == [("B", 20, 1, True)]


def test_without_chunked_prefill_a_request_longer_than_the_budget_is_rejected() -> None:
    sched = scheduler(budget=32, chunked=False)
    # KV tokens 32 + 2 - 1 = 33 > 32: it could never be scheduled.
    results = list(sched.run([make_request("long", range(32), outputs(2)), make_request("ok", range(31), outputs(2))]))
    res = by_id(results)
    assert res["long"].rejected and res["long"].ttft_s is None
    assert not res["ok"].rejected
    assert sched.stats.rejected == 1


def test_long_prefill_token_threshold_caps_each_chunk() -> None:
    rec = Recorder()
    sched = scheduler(budget=32, threshold=10, recorder=rec)
    list(sched.run([make_request("A", range(25), outputs(1)), make_request("B", range(100, 108), outputs(1))]))
    # Step 0: A is capped at 10 tokens, leaving 22 for B's 8.
    assert rec.chunks(0) == [("A", 0, 10, False), ("B", 0, 8, True)]
    assert rec.chunks(1) == [("A", 10, 10, False)]
    assert rec.chunks(2) == [("A", 20, 5, True)]


# ------------------------------------------------------------------ preemption
def test_preemption_evicts_the_newest_running_request_to_the_front_of_waiting() -> None:
    # 7 usable blocks. A: prompt 8 + 8 outputs (KV 15, 4 blocks); B: prompt 10 + 8
    # outputs (KV 17, 5 blocks). Together they need 9: B will be preempted.
    rec = Recorder()
    sched = scheduler(num_blocks=8, recorder=rec)
    pool, tables = sched.manager.pool, sched.manager.req_to_blocks
    a = make_request("A", range(8), outputs(8, 100))
    b = make_request("B", range(50, 60), outputs(8, 200))
    later = make_request("C", range(70, 74), outputs(1), arrival=4.5)
    assert sched.add_request(a) is None and sched.add_request(b) is None

    def step() -> list[str]:
        return [r.request_id for r in sched.step()]

    # Step 0: A |0..3|4..7| -> [1, 2]; B |50..53|54..57|58 59| -> [3, 4, 5].
    assert step() == []
    assert rec.chunks(0) == [("A", 0, 8, True), ("B", 0, 10, True)]
    assert tables == {"A": [1, 2], "B": [3, 4, 5]}
    assert pool.free_queue() == [6, 7]
    # Step 1: A's 9th token needs a 3rd block (6); B's 11th fits in block 5.
    step()
    assert tables == {"A": [1, 2, 6], "B": [3, 4, 5]}
    assert pool.free_queue() == [7]
    # Step 2: B's 12th token fills block 5, which is cached (prompt 58 59 + 2 outputs).
    step()
    assert pool.block_hash[5] == b.block_keys[2]
    # Step 3: B's 13th token takes block 7; the pool is full.
    step()
    assert tables == {"A": [1, 2, 6], "B": [3, 4, 5, 7]}
    assert pool.free_queue() == []
    # Step 4: A fills (and caches) block 6; B decodes inside block 7.
    step()
    assert sched.stats.preemptions == 0
    # C arrives during step 4 and waits behind nobody (waiting was empty).
    assert sched.add_request(later) is None
    # Step 5: A's 13th token needs a 4th block and none is free: the newest running
    # request, B, is preempted: freed tail first, its unhashed block 7 to the head,
    # its hashed 5, 4, 3 to the tail. A then pops 7 (no eviction).
    step()
    assert rec.events == [("preempted", "B", 5)]
    assert rec.chunks(5) == [("A", 12, 1, True)]
    assert tables == {"A": [1, 2, 6, 7]}
    assert pool.free_queue() == [5, 4, 3]
    assert pool.num_evicted == 0
    assert b.num_computed_tokens == 0
    # B is back at the FRONT of waiting, ahead of C; nothing was admitted in a step
    # that preempted.
    assert [s.req.request_id for s in sched.waiting] == ["B", "C"]
    assert [s.req.request_id for s in sched.running] == ["A"]
    # Step 6: B (5 outputs so far) resumes as a 15-token prompt; its lookup may hit
    # up to 9 + 5 = 14 tokens: blocks [3, 4, 5], 12 tokens, past its 10-token
    # prompt. It needs 1 new block, and its 3 free hits count too: 4 > 3 free. B
    # stays at the head, so C (behind it) waits too.
    step()
    assert rec.chunks(6) == [("A", 13, 1, True)]
    assert [s.req.request_id for s in sched.waiting] == ["B", "C"]
    assert b.hit_cap_tokens == 9  # the extended cap was only for the lookup
    # Step 7: A samples its 8th and last token and is freed: its partial block 7
    # (tokens 12..14) to the head, hashed 6, 2, 1 to the tail.
    assert step() == ["A"]
    assert pool.free_queue() == [7, 5, 4, 3, 6, 2, 1]
    # Step 8: B is admitted: hits [3, 4, 5] leave the queue, block 7 is popped for
    # tokens 12..14, which it recomputes from the hit. C follows with block 6
    # (evicting A's cached block 3).
    step()
    assert rec.chunks(8) == [("B", 12, 3, True), ("C", 0, 4, True)]
    assert tables["B"] == [3, 4, 5, 7]
    assert rec.batches[8].chunks[0].block_ids == [3, 4, 5, 7]
    assert pool.num_evicted == 1
    # Steps 9, 10: B decodes to its 8th output; its 17th KV token takes block 2.
    assert step() == []
    assert step() == ["B"]
    assert tables == {}
    # B's chunks tile 0..14, then (after the preemption) 12..16 from its hit.
    assert rec.per_request("B") == [(0, 10), (10, 1), (11, 1), (12, 1), (13, 1), (12, 3), (15, 1), (16, 1)]
    st = sched.stats
    assert (st.preemptions, st.cached_tokens, st.recomputed_tokens) == (1, 12, 2)
    # Prefill: A 8, B 10, B again 3 (12..14), C 4; everything else decodes.
    assert st.prefill_tokens == 8 + 10 + 3 + 4
    assert st.prefill_tokens + st.decode_tokens == 15 + (14 + 5) + 4
    assert st.peak_kv_blocks == 7


def test_a_request_that_preempts_itself_stops_being_scheduled() -> None:
    # 4 usable blocks. A: prompt 8 + 4 outputs (KV 11, 3 blocks); B: prompt 3 + 5
    # outputs (KV 7, 2 blocks).
    rec = Recorder()
    sched = scheduler(num_blocks=5, recorder=rec)
    pool, tables = sched.manager.pool, sched.manager.req_to_blocks
    a = make_request("A", range(8), outputs(4, 100))
    b = make_request("B", range(50, 53), outputs(5, 200))
    results = []
    sched.add_request(a)
    sched.add_request(b)
    # Step 0: A -> [1, 2], B -> [3]. Step 1: A's 9th token pops 4; B's 4th fills block 3.
    results += sched.step() + sched.step()
    assert tables == {"A": [1, 2, 4], "B": [3]}
    assert pool.free_queue() == []
    # Step 2: A decodes in block 4. B's 5th token needs a block: B is the newest
    # running request, so it preempts itself and is not scheduled.
    results += sched.step()
    assert rec.chunks(2) == [("A", 9, 1, True)]
    assert rec.events == [("preempted", "B", 2)]
    assert pool.free_queue() == [3]
    # Step 3: B (2 outputs so far: a 5-token prompt) hits block 3 (prompt + its
    # first output) but needs 1 more: 1 + 1 free hit > 1 free. A finishes.
    results += sched.step()
    assert rec.chunks(3) == [("A", 10, 1, True)]
    assert pool.free_queue() == [4, 3, 2, 1]
    # Step 4: B resumes from its 4-token hit and recomputes token 4.
    results += sched.step()
    assert rec.chunks(4) == [("B", 4, 1, True)]
    assert tables == {"B": [3, 4]}
    while sched.has_unfinished():
        results += sched.step()
    assert rec.per_request("B") == [(0, 3), (3, 1), (4, 1), (5, 1), (6, 1)]
    res = by_id(results)
    assert res["B"].preemptions == 1 and res["A"].preemptions == 0
    # B's reported hit is its first admission's: nothing.
    assert (res["B"].cached_tokens, res["B"].hit_blocks, res["B"].first_miss_block) == (0, 0, None)


# ------------------------------------------------------------------ results and stats
def test_results_report_the_first_admissions_prefix_hit() -> None:
    sched = scheduler(num_blocks=20)
    prompt = list(range(20))
    reqs = [make_request("A", prompt, outputs(2)), make_request("B", prompt, outputs(2, 300), arrival=5.0)]
    res = by_id(list(sched.run(reqs)))
    # B repeats A's 20-token prompt: the hit is capped at 19 -> 4 blocks, 16 tokens.
    assert (res["A"].cached_tokens, res["A"].hit_blocks, res["A"].blocks, res["A"].first_miss_block) == (0, 0, 5, 0)
    assert (res["B"].cached_tokens, res["B"].hit_blocks, res["B"].blocks, res["B"].first_miss_block) == (16, 4, 5, 4)
    st = sched.stats
    assert st.cached_tokens == 16
    assert (st.prefill_tokens, st.decode_tokens) == (20 + 4, 1 + 1)


def test_a_request_that_cannot_fit_in_the_empty_pool_is_rejected() -> None:
    sched = scheduler(num_blocks=4)  # 3 usable blocks = 12 tokens of KV
    reqs = [
        make_request("too-long", range(12), outputs(2)),  # KV 13
        make_request("fits", range(12), outputs(1)),  # KV 12
    ]
    results = list(sched.run(reqs))
    assert [(r.request_id, r.rejected) for r in results] == [("too-long", True), ("fits", False)]
    rej = results[0]
    assert (rej.cached_tokens, rej.hit_blocks, rej.blocks, rej.first_miss_block) == (0, 0, 3, 0)
    assert rej.ttft_s is None and rej.e2e_s is None
    assert sched.stats.rejected == 1 and sched.stats.finished == 1


def test_a_fully_hit_request_samples_without_computing() -> None:
    # As a hash-id trace with hit cap "none": the hit may cover the whole prompt.
    rec = Recorder()
    sched = scheduler(recorder=rec)
    first = make_request("A", range(8), outputs(1))
    again = make_request("B", range(8), outputs(2), arrival=5.0)
    again.hit_cap_tokens = 8
    list(sched.run([first, again]))
    # B hits both blocks: a 0-token chunk that samples, then one decode token.
    assert rec.per_request("B") == [(8, 0), (8, 1)]
    assert rec.batches[1].chunks[0].samples


# ------------------------------------------------------------------ percentiles
def test_percentile_is_nearest_rank() -> None:
    # The nearest-rank examples of the Wikipedia "Percentile" article.
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert [percentile(list(range(10, 0, -1)), p) for p in (50, 90, 99)] == [5, 9, 10]
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_latency_summary_leaves_out_rejected_requests() -> None:
    def result(rid: str, ttft: float | None, e2e: float | None, rejected: bool = False) -> RequestResult:
        return RequestResult(rid, None, None, 0.0, 10, 0, 0, 0, None, rejected, ttft_s=ttft, e2e_s=e2e)

    rs = [result(str(i), float(i), 10.0 * i) for i in range(1, 11)] + [result("x", None, None, True)]
    summary = latency_summary(rs)
    assert summary == LatencySummary(10, {"p50": 5.0, "p90": 9.0, "p99": 10.0}, {"p50": 50.0, "p90": 90.0, "p99": 100.0})
    assert latency_summary([]) == LatencySummary(0)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_num_batched_tokens": 0},
        {"max_num_batched_tokens": 8192.0},
        {"max_num_seqs": 0},
        {"max_num_seqs": -1},
        {"long_prefill_token_threshold": -1},
        {"enable_chunked_prefill": "yes"},
    ],
)
def test_scheduler_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SchedulerConfig(**kwargs)


def test_scheduler_config_defaults_are_vllms() -> None:
    cfg = SchedulerConfig()
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.enable_chunked_prefill, cfg.long_prefill_token_threshold) == (
        8192, 256, True, 0,
    )
    gib = 1 << 30
    h100 = SchedulerConfig.vllm_defaults(80 * gib, "NVIDIA H100 80GB HBM3")
    assert (h100.max_num_batched_tokens, h100.max_num_seqs) == (16384, 1024)
    h100_server = SchedulerConfig.vllm_defaults(80 * gib, "NVIDIA H100 80GB HBM3", "server")
    assert (h100_server.max_num_batched_tokens, h100_server.max_num_seqs) == (8192, 1024)
    # A100 keeps the small defaults even with 80 GB.
    a100 = SchedulerConfig.vllm_defaults(80 * gib, "NVIDIA A100-SXM4-80GB", "server")
    assert (a100.max_num_batched_tokens, a100.max_num_seqs) == (2048, 256)
    l4 = SchedulerConfig.vllm_defaults(24 * gib, "NVIDIA L4")
    assert (l4.max_num_batched_tokens, l4.max_num_seqs) == (8192, 256)
    with pytest.raises(ConfigError):
        SchedulerConfig.vllm_defaults(0, "", "batch")  # type: ignore[arg-type]


def test_repeated_request_ids_run_side_by_side_and_keep_their_ids() -> None:
    # Two calls with the same id overlap in time (logs repeat ids): both run,
    # neither's blocks are mixed up with the other's, and both results carry the id.
    from kvcache.engine.config import CacheConfig
    from kvcache.engine.hashing import hash_token_blocks
    from kvcache.engine.request import Request
    from kvcache.engine.scheduler import Scheduler

    def req(tokens: list[int]) -> Request:
        keys = hash_token_blocks(tokens, 4, "xxh3_128", None, None)
        return Request("same", keys, len(tokens), len(tokens), 3, len(tokens) - 1, arrival=0.0)

    s = Scheduler(CacheConfig(block_size=4, num_blocks=64))
    results = list(s.run([req(list(range(12))), req(list(range(100, 112)))]))
    assert [r.request_id for r in results] == ["same", "same"]
    assert sorted(r.cached_tokens for r in results) == [0, 0]
    assert not s.manager.req_to_blocks
