"""Compute replay: a real model on the paged KV cache, with and without prefix caching.

Replays a trace through the scheduler with ``--compute`` semantics (the model's
K/V in the pool's pages) twice: prefix caching on, then off. Prints tokens/s,
the prefill tokens the cache let the model skip, the wall time each run took,
and ``--verify``'s largest relative error. Figures, not assertions.

    python benchmarks/compute_replay.py [TRACE] [--model tiny-random] [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(trace: str, model: object, caching: bool, limit: int | None, verify: bool, kv_blocks: int) -> dict:
    from kvcache.engine.config import CacheConfig
    from kvcache.engine.executor import ModelExecutor
    from kvcache.engine.scheduler import Scheduler
    from kvcache.engine.traces.stream import RequestStream, StreamOptions

    stream = RequestStream(trace, StreamOptions(keep_token_ids=True))
    requests = itertools.islice(stream, limit) if limit else stream
    ex = ModelExecutor(model, kv_blocks, 16, verify=verify)
    sched = Scheduler(CacheConfig(block_size=16, num_blocks=kv_blocks, enable_caching=caching), None, None, ex)
    t0 = time.perf_counter()
    results = list(sched.run(requests))
    wall = time.perf_counter() - t0
    s = ex.stats
    return {
        "prefix_caching": caching,
        "requests": len(results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "cached_tokens": sum(r.cached_tokens for r in results),
        "prefill_tokens_computed": s.prefill_tokens,
        "prefill_tokens_skipped": s.prefill_tokens_skipped,
        "decode_tokens": s.decode_tokens,
        "steps": s.steps,
        "forward_s": round(s.forward_seconds, 3),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(s.tokens_per_second, 1),
        "prefill_tokens_per_s": round(s.prefill_tokens / s.forward_seconds, 1) if s.forward_seconds else None,
        "verify_max_rel_err": s.verify_max_rel_err if verify else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(REPO / "sample_traces" / "agents.jsonl"))
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--limit", type=int, default=None, help="first N requests only")
    ap.add_argument("--kv-blocks", type=int, default=4096)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from kvcache.engine.weights import load_model

    model = load_model(args.model)
    rows = [run(args.trace, model, caching, args.limit, not args.no_verify, args.kv_blocks) for caching in (True, False)]
    on, off = rows
    print(f"trace {args.trace}: {on['requests']} requests, {on['prompt_tokens']:,} prompt tokens, model {args.model}")
    for r in rows:
        label = "prefix caching on " if r["prefix_caching"] else "prefix caching off"
        err = f", verify max rel err {r['verify_max_rel_err']:.2e}" if r["verify_max_rel_err"] is not None else ""
        print(f"  {label}: prefill computed {r['prefill_tokens_computed']:,}, skipped {r['prefill_tokens_skipped']:,}; "
              f"decode {r['decode_tokens']:,}; {r['steps']:,} steps; forward {r['forward_s']:.1f} s, wall {r['wall_s']:.1f} s; "
              f"{r['tokens_per_s']:,.0f} tokens/s{err}")
    if off["prefill_tokens_computed"]:
        print(f"  the cache skipped {on['prefill_tokens_skipped'] / off['prefill_tokens_computed']:.1%} of prefill tokens; "
              f"wall time {on['wall_s'] / off['wall_s']:.2f}x of the uncached run")
    if args.json:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        env = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "git_sha": sha, "argv": sys.argv,
               "repro_command": " ".join(["python", *sys.argv])}
        Path(args.json).write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
