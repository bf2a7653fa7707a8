"""Property tests of the scheduler on random traces.

Prompts come from a two-token alphabet with tiny blocks, and some requests continue
an earlier one (its prompt + output + more), so prefix hits, decode-block hits,
evictions and, in small pools, preemptions are all common.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache.engine.config import CacheConfig
from kvcache.engine.cost_model import FixedStepCost
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.request import Request
from kvcache.engine.sched_config import SchedulerConfig
from kvcache.engine.scheduler import ScheduledBatch, Scheduler

SETTINGS = settings(max_examples=150, deadline=None)
TOKENS = st.integers(0, 1)


@dataclass(frozen=True)
class Spec:
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    gap: float
    # Like a hash-id trace under --hit-cap none: only prompt blocks have keys and
    # the hit may cover the whole prompt.
    hash_id_style: bool = False


@st.composite
def specs(draw: st.DrawFn, max_requests: int = 10) -> list[Spec]:
    out: list[Spec] = []
    for _ in range(draw(st.integers(1, max_requests))):
        if out and draw(st.booleans()):
            prev = draw(st.sampled_from(out))
            prompt = prev.prompt + prev.output + tuple(draw(st.lists(TOKENS, max_size=5)))
        else:
            prompt = tuple(draw(st.lists(TOKENS, min_size=1, max_size=16)))
        output = tuple(draw(st.lists(TOKENS, max_size=8)))
        gap = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]))
        out.append(Spec(prompt[:30], output, gap, draw(st.integers(0, 4)) == 0))
    return out


def build(specs_: list[Spec], block_size: int) -> list[Request]:
    reqs, t = [], 0.0
    for i, s in enumerate(specs_):
        t += s.gap
        keys = hash_token_blocks(list(s.prompt + s.output), block_size, "xxh3_128")
        n = len(s.prompt)
        cap = n - 1
        if s.hash_id_style:
            keys, cap = keys[: n // block_size], n
        reqs.append(Request(str(i), keys, n, n, len(s.output), cap, arrival=t))
    return reqs


@st.composite
def sched_configs(draw: st.DrawFn) -> SchedulerConfig:
    return SchedulerConfig(
        max_num_batched_tokens=draw(st.integers(1, 40)),
        max_num_seqs=draw(st.integers(1, 4)),
        enable_chunked_prefill=draw(st.booleans()),
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 1, 3, 8])),
    )


class Checker:
    """A StepExecutor that checks the scheduler's invariants in the middle of every step
    (blocks allocated, nothing freed yet), and records each request's chunks."""

    def __init__(self, sched: Scheduler, reqs: list[Request]) -> None:
        self.sched = sched
        self.lives: dict[str, list[list[tuple[int, int, bool]]]] = {r.request_id: [[]] for r in reqs}
        self.finished: list[str] = []
        self.preempted_this_step = False

    def execute(self, batch: ScheduledBatch) -> None:
        sched, cfg = self.sched, self.sched.config
        mgr, pool = sched.manager, sched.manager.pool
        bs = sched.block_size
        assert batch.time == sched.clock
        assert sum(c.num_tokens for c in batch.chunks) <= cfg.max_num_batched_tokens
        assert len(sched.running) <= cfg.max_num_seqs
        assert len({c.request.request_id for c in batch.chunks}) == len(batch.chunks)
        running_ids = {s.req.request_id for s in sched.running}
        assert set(mgr.req_to_blocks) == running_ids
        free = set(pool.free_queue())
        holders: Counter[int] = Counter()
        for rid in running_ids:
            holders.update(mgr.req_to_blocks[rid])
        # Blocks held by running requests are never in the free queue, and each
        # one's ref count is exactly its number of holders.
        for b, k in holders.items():
            assert b != 0 and b not in free, f"running block {b} is free"
            assert pool.ref_cnt[b] == k
        assert sched.kv_blocks_in_use == len(holders)
        if not pool.unbounded:
            assert len(holders) + pool.num_free_blocks == sched.cache_config.usable_blocks
            assert sum(pool.ref_cnt[1:]) == sum(holders.values())
        for c in batch.chunks:
            req = c.request
            assert req.arrival <= batch.time, "admitted before it arrived"
            if cfg.long_prefill_token_threshold:
                assert c.num_tokens <= cfg.long_prefill_token_threshold
            assert c.block_ids == mgr.req_to_blocks[req.request_id]
            assert len(c.block_ids) == -(-(c.start + c.num_tokens) // bs)
            life = self.lives[req.request_id][-1]
            if not life:
                # vLLM admits no waiting request in a step that preempted.
                assert not self.preempted_this_step, f"{req.request_id} admitted in a step that preempted"
                # (Re)admitted: the chunk starts at the prefix hit, whose blocks
                # carry this request's own block keys.
                assert c.start % bs == 0
                for j, b in enumerate(c.block_ids[: c.start // bs]):
                    assert pool.block_hash[b] == req.block_keys[j]
            life.append((c.start, c.num_tokens, c.samples))
        self.preempted_this_step = False

    def finish(self, request: Request) -> None:
        self.finished.append(request.request_id)

    def preempted(self, request: Request) -> None:
        self.lives[request.request_id].append([])
        self.preempted_this_step = True


@SETTINGS
@given(specs(), sched_configs(), st.sampled_from([None, 3, 5, 8, 12, 30]), st.sampled_from([2, 4]),
       st.sampled_from(["current", "classic"]))
def test_invariants_hold_at_every_step_and_chunks_tile_each_request(
    specs_: list[Spec], cfg: SchedulerConfig, num_blocks: int | None, bs: int, free_order: str
) -> None:
    reqs = build(specs_, bs)
    sched = Scheduler(CacheConfig(block_size=bs, num_blocks=num_blocks, free_order=free_order), cfg, FixedStepCost(1.0))
    checker = Checker(sched, reqs)
    sched.executor = checker
    results = list(sched.run(reqs))
    assert sorted(r.request_id for r in results) == sorted(r.request_id for r in reqs)
    ran = [r for r in results if not r.rejected]
    assert sorted(checker.finished) == sorted(r.request_id for r in ran)
    by_id = {r.request_id: r for r in reqs}
    for res in ran:
        req = by_id[res.request_id]
        lives = checker.lives[req.request_id]
        assert res.preemptions == len(lives) - 1
        generated = 0
        for i, life in enumerate(lives):
            # Each life is one contiguous run of chunks from its hit; every life
            # but the last was cut short by a preemption.
            assert life
            for (s0, n0, _), (s1, _, _) in zip(life, life[1:]):
                assert s1 == s0 + n0
            for s, n, samples in life:
                # A chunk samples exactly when it reaches the request's last token.
                assert samples == (s + n == req.kv_prompt_tokens + generated)
                generated += samples
        # The last life ends with the last KV token: P + N - 1.
        s, n, samples = lives[-1][-1]
        assert s + n == req.num_kv_tokens and samples
        assert generated == max(req.output_tokens, 1)
        assert res.ttft_s is not None and res.e2e_s is not None and 0 < res.ttft_s <= res.e2e_s
    # Everything is freed at the end.
    pool = sched.manager.pool
    assert sched.kv_blocks_in_use == 0 and sched.manager.req_to_blocks == {}
    assert all(r == 0 for r in pool.ref_cnt[1:])
    if num_blocks is not None:
        assert sorted(pool.free_queue()) == list(range(1, num_blocks))
    st_ = sched.stats
    assert st_.finished == len(ran) and st_.rejected == len(results) - len(ran)
    assert st_.preemptions == sum(r.preemptions for r in ran)
    computed = sum(n for lives in checker.lives.values() for life in lives for _, n, _ in life)
    assert st_.prefill_tokens + st_.decode_tokens == computed
    assert st_.evictions == pool.num_evicted


@SETTINGS
@given(specs(), st.sampled_from([None, 3, 5, 8, 12, 30]), st.sampled_from([2, 4]),
       st.sampled_from(["current", "classic"]), st.integers(1, 40))
def test_one_request_at_a_time_matches_the_sequential_replayer(
    implementation: str, specs_: list[Spec], num_blocks: int | None, bs: int, free_order: str, budget: int
) -> None:
    # With max_num_seqs = 1 each request runs alone from lookup to free, whatever
    # the chunk sizes: the hits, the evictions and the free queue are the replayer's.
    cache = CacheConfig(block_size=bs, num_blocks=num_blocks, free_order=free_order)
    reqs = build(specs_, bs)
    replayer = SequentialReplayer(cache, implementation=implementation)
    expected = {r.request_id: r for r in replayer.run(reqs)}
    sched = Scheduler(cache, SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=1), FixedStepCost(1.0))
    got = {r.request_id: r for r in sched.run(build(specs_, bs))}

    def key(r):  # noqa: ANN001, ANN202
        return (r.cached_tokens, r.hit_blocks, r.blocks, r.first_miss_block, r.rejected)

    assert {k: key(v) for k, v in got.items()} == {k: key(v) for k, v in expected.items()}
    assert sched.manager.pool.free_queue() == replayer.free_queue()
    assert dict(sched.manager.pool.cached) == dict(replayer.cached)
    assert sched.stats.evictions == replayer.stats.evicted_blocks
    assert sched.stats.preemptions == 0


@SETTINGS
@given(specs(), sched_configs(), st.sampled_from([None, 3, 5, 8, 12]), st.sampled_from([2, 4]))
def test_decode_fast_path_changes_nothing(
    specs_: list[Spec], cfg: SchedulerConfig, num_blocks: int | None, bs: int
) -> None:
    def run(fast: bool) -> tuple:
        sched = Scheduler(CacheConfig(block_size=bs, num_blocks=num_blocks), cfg, FixedStepCost(1.0))
        sched.fast_decode = fast
        results = list(sched.run(build(specs_, bs)))
        return results, sched.stats, sched.manager.pool.free_queue(), dict(sched.manager.pool.cached)

    assert run(True) == run(False)
