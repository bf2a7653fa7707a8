"""The point of --compute: K/V read from cached pages equal K/V computed afresh.

Every request runs through the scheduler with a real (tiny, seeded) model whose
K/V live in the block pool; its last-prompt-token logits are compared with the
same prompt computed alone in an empty cache, and greedy outputs are compared
with a dense, cache-free decode of the same prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kvcache.engine.config import CacheConfig  # noqa: E402
from kvcache.engine.executor import ModelExecutor, relative_error  # noqa: E402
from kvcache.engine.sched_config import SchedulerConfig  # noqa: E402
from kvcache.engine.scheduler import Scheduler  # noqa: E402
from kvcache.engine.traces.stream import RequestStream, StreamOptions  # noqa: E402
from kvcache.engine.weights import load_model  # noqa: E402

FP32_TOL = 1e-4  # the bound; kernels.md measured ~1e-6 here


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead (and spin under load)
    return load_model("tiny-random")


def synth_trace(tmp_path: Path) -> str:
    from typer.testing import CliRunner

    from kvcache.cli.main import app

    out = tmp_path / "synth.jsonl"
    r = CliRunner().invoke(app, [
        "synth", "-o", str(out), "--seed", "3", "--orgs", "2", "--users-per-org", "1", "--sessions-per-user", "2",
        "--min-turns", "2", "--max-turns", "3", "--system-words", "60-80", "--tools", "2-3",
    ])
    assert r.exit_code == 0, r.output
    return str(out)


def run(trace: str, loaded, num_blocks: int, sched: SchedulerConfig | None = None, block_size: int = 16):
    stream = RequestStream(trace, StreamOptions(keep_token_ids=True, block_size=block_size))
    ex = ModelExecutor(loaded, num_blocks, block_size, verify=True, keep_outputs=True)
    s = Scheduler(CacheConfig(block_size=block_size, num_blocks=num_blocks), sched, None, ex)
    results = list(s.run(stream))
    return results, ex, s


def test_cached_prefix_logits_match_scratch_for_every_request(tmp_path: Path, tiny) -> None:
    results, ex, s = run(synth_trace(tmp_path), tiny, num_blocks=2048)
    assert len(results) >= 6 and not any(r.rejected for r in results)
    # The cache was really used: most prompt tokens were read from pages ...
    assert sum(r.cached_tokens for r in results) > 0.3 * sum(r.prompt_tokens for r in results)
    assert ex.stats.prefill_tokens_skipped == s.stats.cached_tokens > 0
    # ... and every request's logits agree with an empty-cache recompute.
    assert ex.stats.verify_requests == len(results)
    assert ex.stats.verify_max_rel_err <= FP32_TOL


def token_trace(tmp_path: Path, n: int = 10, seed: int = 0) -> str:
    """Requests sharing two system prefixes, all arriving at once, replies unrecorded."""
    rng = random.Random(seed)
    systems = [[rng.randrange(8192) for _ in range(24)] for _ in range(2)]
    rows = []
    for i in range(n):
        prompt = systems[i % 2] + [rng.randrange(8192) for _ in range(rng.randrange(3, 20))]
        rows.append({"request_id": f"r{i}", "arrival": 0.0, "prompt_token_ids": prompt, "output_length": 6})
    p = tmp_path / "tokens.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def dense_greedy(loaded, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(loaded.model.forward_dense(torch.tensor(ids))[-1].argmax()))
    return ids[len(prompt):]


def test_outputs_survive_preemption_and_eviction(tmp_path: Path, tiny) -> None:
    trace = token_trace(tmp_path)
    # 13 usable blocks of 4 tokens for 10 requests of 30-50 tokens: requests are
    # preempted and cached prefixes evicted while others still run.
    results, ex, s = run(trace, tiny, num_blocks=14, sched=SchedulerConfig(max_num_batched_tokens=32), block_size=4)
    assert s.stats.preemptions > 0 and s.manager.pool.num_evicted > 0
    assert any(r.cached_tokens for r in results)
    assert ex.stats.verify_requests == 10 and ex.stats.verify_max_rel_err <= FP32_TOL
    # Greedy replies equal a dense decode of each prompt alone, with no cache at all.
    prompts = {json.loads(line)["request_id"]: json.loads(line)["prompt_token_ids"] for line in open(trace)}
    for rid, prompt in prompts.items():
        assert ex.outputs[rid] == dense_greedy(tiny, prompt, 6), rid


def test_teacher_forcing_feeds_the_recorded_reply(tmp_path: Path, tiny) -> None:
    reply = [11, 22, 33, 44]
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"request_id": "a", "prompt_token_ids": list(range(20)), "output_token_ids": reply}) + "\n")
    results, ex, _ = run(str(p), tiny, num_blocks=64)
    # The recorded reply is fed back token by token; only the last token is chosen
    # by the model (it is never fed back, so the trace cannot say what follows it).
    assert ex.outputs["a"][:3] == reply[:3]
    assert ex.stats.greedy_tokens == 1


def test_verify_catches_a_wrong_page() -> None:
    # relative_error is what --verify reports: check it sees a one-element change.
    a = torch.ones(4, 8)
    b = a.clone()
    b[2, 3] += 1e-2
    assert relative_error(a, a) == 0.0
    assert relative_error(b, a) == pytest.approx(1e-2)


def test_corrupted_cached_page_is_detected(tmp_path: Path, tiny) -> None:
    # If a hit read the wrong K/V, verify must notice: poison every page after each
    # request finishes, so the next request's hits read garbage.
    trace = token_trace(tmp_path, n=4)

    class Poisoning(ModelExecutor):
        def finish(self, request) -> None:
            super().finish(request)
            for k, v in self.kv_caches:
                k.add_(1.0)
                v.mul_(-1.0)

    stream = RequestStream(trace, StreamOptions(keep_token_ids=True, block_size=4))
    ex = Poisoning(tiny, 64, 4, verify=True)
    sched = Scheduler(CacheConfig(block_size=4, num_blocks=64), SchedulerConfig(max_num_seqs=1), None, ex)
    results = list(sched.run(stream))
    assert sum(r.cached_tokens for r in results) > 0
    assert ex.stats.verify_max_rel_err > 1e-2
