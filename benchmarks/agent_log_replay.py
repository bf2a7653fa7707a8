"""Replay cost of an agent log against the cost of reading it once.

Issue 3's speed target: replaying a Claude Code session must take no more than
3x the time it takes to parse the file and tokenize its unique text once. Both
are measured here in the same run, median of ``--repeat`` runs:

* **baseline** = ``json.loads`` of every line of every file, plus encoding each
  distinct prompt segment once (the segments are collected beforehand, untimed);
* **replay** = the whole library path of ``kvcache replay --provider anthropic``:
  reading, rebuilding every call's prompt, tokenizing with a cold memo, hashing,
  the provider cache and the hit-rate and billing reports.

    python benchmarks/agent_log_replay.py [PATH] [--provider anthropic] [--repeat 5]

PATH defaults to ../shared/traces/claude_code (a file or a folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from kvcache.analyzers.billing import BilledComparison
from kvcache.analyzers.hit_rates import HitRateReport
from kvcache.engine.provider_cache import ProviderReplayer
from kvcache.engine.traces.logs import log_files
from kvcache.engine.traces.stream import RequestStream
from kvcache.engine.traces.tokenizer import load_encoder, tokenizer_for_model

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "traces" / "claude_code"


def files_of(path: Path) -> list[str]:
    return log_files(str(path)) if path.is_dir() else [str(path)]


def parse_all(files: list[str]) -> int:
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            for line in fh:
                if line.strip():
                    json.loads(line)
                    n += 1
    return n


def unique_segments(path: Path) -> dict[str, set[str]]:
    """Distinct text segments per vocabulary, as the replay would encode them."""
    out: dict[str, set[str]] = {}
    for rec in RequestStream(str(path)).records():
        name = tokenizer_for_model(rec.model)
        bucket = out.setdefault(name, set())
        for seg in rec.segments or []:
            if isinstance(seg, str):
                bucket.add(seg)
        for seg in rec.output_segments or ([rec.output_text] if rec.output_text else []):
            if isinstance(seg, str):
                bucket.add(seg)
    return out


def replay(path: Path, provider: str) -> float:
    stream = RequestStream(str(path))
    replayer = ProviderReplayer(provider, stream.block_size)
    rates, billing = HitRateReport(), BilledComparison()
    for r in replayer.run(stream):
        rates.add(r)
        billing.add(r)
    return rates.total.token_hit_rate


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up (loads vocabularies, fills the OS cache)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--provider", default="anthropic")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not args.path.exists():
        sys.exit(f"{args.path} does not exist (the shared traces are not here)")
    files = files_of(args.path)
    segments = unique_segments(args.path)
    encoders = {name: load_encoder(name) for name in segments}

    def tokenize_once() -> None:
        for name, segs in segments.items():
            enc = encoders[name]
            for s in segs:
                enc(s)

    lines = parse_all(files)
    t_parse = median_time(lambda: parse_all(files), args.repeat)
    t_tok = median_time(tokenize_once, args.repeat)
    t_replay = median_time(lambda: replay(args.path, args.provider), args.repeat)
    n_segs = sum(len(s) for s in segments.values())
    chars = sum(len(x) for s in segments.values() for x in s)
    baseline = t_parse + t_tok
    print(f"{args.path}: {len(files)} files, {lines:,} lines, {n_segs:,} unique segments ({chars / 1e6:.1f} M chars)")
    print(f"baseline: parse {t_parse * 1000:.0f} ms + tokenize unique text once {t_tok * 1000:.0f} ms = {baseline * 1000:.0f} ms")
    print(f"replay (--provider {args.provider}): {t_replay * 1000:.0f} ms = {t_replay / baseline:.2f}x the baseline (target <= 3x)")


if __name__ == "__main__":
    main()
