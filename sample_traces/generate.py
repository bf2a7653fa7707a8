"""Regenerate the sample traces in this folder from kvcache's own synthetic generator.

Run from the repository root (``kvcache`` installed)::

    python sample_traces/generate.py            # rewrites sample_traces/*.jsonl
    python sample_traces/generate.py OUT_DIR    # writes them somewhere else

The output depends only on ``CONFIG``: running it twice gives byte-identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kvcache.engine.traces.synth import SynthConfig, breaker_sessions, generate, iter_hash_ids, write_jsonl

HERE = Path(__file__).resolve().parent
# Small system prompts and short sessions keep agents.jsonl under 1 MB: every native
# request repeats the org's whole system prompt and tool set.
CONFIG = SynthConfig(seed=10, orgs=3, users_per_org=5, sessions_per_user=3, min_turns=3, max_turns=6,
                     system_words=(200, 300), tools_per_org=(5, 6), breaker_rate=0.15)


def main(out_dir: Path = HERE) -> None:
    """Write ``agents.jsonl`` and ``agents_hash_ids.jsonl`` into ``out_dir``."""
    native = write_jsonl(generate(CONFIG), out_dir / "agents.jsonl")
    hashed = write_jsonl(iter_hash_ids(CONFIG, with_session=True), out_dir / "agents_hash_ids.jsonl")
    print(f"wrote {native} native and {hashed} hash-id requests to {out_dir}")
    for session_id, (kind, turn) in sorted(breaker_sessions(CONFIG).items()):
        print(f"  {session_id}: {kind} from turn {turn}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
