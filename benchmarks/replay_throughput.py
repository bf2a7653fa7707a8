"""Replay throughput (blocks/s) of the engine against the naive oracle.

Generates a Mooncake-style hash-id trace of at least ``--blocks`` blocks with the
project's own generator, then replays it:

* unbounded, and with an LRU capacity of 10% of the trace's unique blocks;
* through the engine's compiled cycle (``SequentialReplayer``, implementation
  ``c``), its pure-Python block pool (implementation ``python``) and the naive
  dict-and-linked-list model (``kvcache.engine.naive``), on the same pre-built
  requests, after checking that all three agree on every hit;
* end to end from the JSONL file (parsing included), as ``kvcache replay`` does.

Each timing is the median of ``--repeat`` runs (with p20/p80). Peak memory is
measured in fresh subprocesses that stream the trace and the same trace played
twice (twice the length, the same unique blocks): a peak that stays flat shows
memory follows unique blocks, not trace length.

    python benchmarks/replay_throughput.py [--blocks 1000000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvcache.engine.config import CacheConfig
from kvcache.engine.naive import NaivePrefixCache
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.traces.stream import RequestStream
from kvcache.engine.traces.synth import SynthConfig, iter_hash_ids, write_jsonl


def make_trace(path: Path, min_blocks: int, seed: int) -> tuple[int, int, int]:
    """Write a hash-id trace with >= min_blocks blocks; returns (requests, blocks, unique).

    Busy traffic: every session starts within the first 10 minutes, so hundreds
    of conversations interleave and an LRU cache of 10% of the unique blocks
    really does lose hits (with sessions spread over hours it would not).
    """
    users = 10
    while True:
        cfg = SynthConfig(seed=seed, orgs=8, users_per_org=users, sessions_per_user=4,
                          min_turns=5, max_turns=40, span=600.0)
        total = sum(len(r["hash_ids"]) for r in iter_hash_ids(cfg))
        if total >= min_blocks:
            break
        users = int(users * 1.1 * min_blocks / max(total, 1)) + 1
    write_jsonl(iter_hash_ids(cfg), path)
    unique: set[int] = set()
    n_req = 0
    for r in iter_hash_ids(cfg):
        unique.update(r["hash_ids"])
        n_req += 1
    return n_req, total, len(unique)


def environment() -> dict:
    """Versions, machine and git sha, so a figure can be traced to what produced it."""
    from importlib.metadata import version

    from kvcache.engine.replay import load_accelerator

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {
        "python": platform.python_version(), "kvcache": version("kvcache"), "xxhash": version("xxhash"),
        "machine": platform.machine(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "accelerator": load_accelerator() is not None, "git_sha": sha,
        "argv": sys.argv, "repro_command": "python benchmarks/replay_throughput.py " + " ".join(sys.argv[1:]),
    }


def quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)

    def q(p: float) -> float:
        i = (len(xs) - 1) * p
        lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)

    return {"median": statistics.median(xs), "p20": q(0.2), "p80": q(0.8)}


def time_runs(fn, repeat: int) -> list[float]:
    """Seconds per run, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def peak_rss_mb(trace: Path, num_blocks: int | None, copies: int) -> float:
    """Max RSS of a fresh process that streams ``copies`` back-to-back plays of the trace."""
    code = f"""
import resource, json, itertools
from kvcache.engine.config import CacheConfig
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.traces.stream import RequestStream
def plays():
    for _ in range({copies}):
        yield from RequestStream({str(trace)!r})
s = RequestStream({str(trace)!r})
rp = SequentialReplayer(CacheConfig(block_size=s.block_size, num_blocks={num_blocks!r}))
n = sum(r.hit_blocks for r in rp.run(plays()))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=1_000_000, help="minimum blocks in the generated trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        t0 = time.perf_counter()
        n_req, n_blocks, n_unique = make_trace(trace, args.blocks, args.seed)
        gen_s = time.perf_counter() - t0
        print(f"trace: {n_req:,} requests, {n_blocks:,} blocks, {n_unique:,} unique "
              f"({trace.stat().st_size / 1e6:.1f} MB, generated in {gen_s:.1f} s)")
        stream = RequestStream(str(trace))
        requests = list(stream)
        bs = stream.block_size
        results = []
        for label, num_blocks in (("unbounded", None), ("lru-10%", n_unique // 10 + 1)):
            def engine(nb=num_blocks, impl="c"):
                rp = SequentialReplayer(CacheConfig(block_size=bs, num_blocks=nb), implementation=impl)
                return sum(r.hit_blocks for r in rp.run(requests))

            def python_pool(nb=num_blocks):
                return engine(nb, "python")

            def naive(nb=num_blocks):
                cache = NaivePrefixCache(nb, bs)
                return sum(len(x[0]) for x in map(cache.run, requests) if x is not None)

            def end_to_end(nb=num_blocks):
                s = RequestStream(str(trace))
                return sum(r.hit_blocks for r in SequentialReplayer(CacheConfig(block_size=bs, num_blocks=nb)).run(s))

            probe = SequentialReplayer(CacheConfig(block_size=bs, num_blocks=num_blocks))
            hits = sum(r.hit_blocks for r in probe.run(requests))
            row = {"capacity": label, "num_blocks": num_blocks, "hit_blocks": hits,
                   "block_hit_rate": round(hits / n_blocks, 4), "evicted_blocks": probe.stats.evicted_blocks}
            impls = [("engine", engine), ("python_pool", python_pool), ("end_to_end", end_to_end)]
            if not args.skip_naive:
                impls.append(("naive", naive))
            for name, fn in impls:
                if name in ("python_pool", "naive", "end_to_end"):
                    assert fn() == hits, f"{name} disagrees with the engine"
                times = time_runs(fn, args.repeat)
                rates = quantiles([n_blocks / t / 1e6 for t in times])  # M blocks/s
                row[name] = {k: round(v, 3) for k, v in rates.items()}
                row[name + "_seconds"] = round(statistics.median(times), 3)
                row[name + "_requests_per_s"] = round(n_req / statistics.median(times))
            print(f"{label:>10}: hit rate {row['block_hit_rate']:.4f}, {row['evicted_blocks']:,} evictions;  M blocks/s (median, p20-p80):  "
                  + "  ".join(f"{name} {row[name]['median']:.2f} ({row[name]['p20']:.2f}-{row[name]['p80']:.2f})" for name, _ in impls)
                  + ("" if args.skip_naive else f"  engine/naive x{row['engine']['median'] / row['naive']['median']:.1f}"))
            results.append(row)
        mem = {
            "unbounded_1x_mb": peak_rss_mb(trace, None, 1),
            "unbounded_2x_mb": peak_rss_mb(trace, None, 2),
        }
        print(f"peak RSS streaming the trace once: {mem['unbounded_1x_mb']:.0f} MB; "
              f"twice ({2 * n_blocks:,} blocks, same {n_unique:,} unique): {mem['unbounded_2x_mb']:.0f} MB")
    report = {
        "env": environment(),
        "trace": {"requests": n_req, "blocks": n_blocks, "unique_blocks": n_unique, "block_size": bs},
        "results": results, "memory": mem,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
