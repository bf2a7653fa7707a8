"""``kvcache synth``: write a deterministic synthetic multi-user agent trace."""

from __future__ import annotations

import sys
from enum import Enum
import typer

from kvcache.cli.errors import UsageError, handle_errors


class SynthFormat(str, Enum):
    native = "native"
    hash_ids = "hash-ids"


def _range(flag: str, text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise UsageError(f"{flag} expects a range such as 200-300, got {text!r}")
    return int(lo), int(hi)


@handle_errors
def synth(
    output: str = typer.Option("-", "--output", "-o", help="Where to write the JSONL trace (- for stdout)."),
    trace_format: SynthFormat = typer.Option(SynthFormat.native, "--format", "-f", help="native (messages, tools, system) or hash-ids (Mooncake style)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed always gives the same trace."),
    orgs: int = typer.Option(3, "--orgs", min=1, help="Orgs (cache isolation domains); each shares one system prompt and tool set."),
    users_per_org: int = typer.Option(4, "--users-per-org", min=1, help="Users per org; they share the org's prompt and tools."),
    sessions_per_user: int = typer.Option(2, "--sessions-per-user", min=1, help="Agent sessions (conversations) per user."),
    min_turns: int = typer.Option(3, "--min-turns", min=1, help="Fewest requests in a session."),
    max_turns: int = typer.Option(10, "--max-turns", min=1, help="Most requests in a session."),
    breaker_rate: float = typer.Option(0.15, "--breaker-rate", min=0.0, max=1.0, help="Share of sessions with an injected cache breaker."),
    system_words: str = typer.Option("300-1500", "--system-words", metavar="LO-HI", help="Words in each org's system prompt, an inclusive range."),
    tools: str = typer.Option("5-12", "--tools", metavar="LO-HI", help="Tools in each org's tool set, an inclusive range."),
    trace_block_size: int | None = typer.Option(None, "--trace-block-size", min=1, help="Tokens per hash id for --format hash-ids (default 512)."),
) -> None:
    """Generate a synthetic trace of multi-turn, tool-using agent sessions.

    Orgs' users share one system prompt and tool set; sessions grow their history
    turn by turn; a few sessions carry real cache breakers (a timestamp in the
    system prompt, shuffled tool order, re-serialized JSON with another key
    order, truncated history). The output is byte-identical for a given seed.
    """
    from kvcache.engine.errors import ConfigError
    from kvcache.engine.traces.synth import SynthConfig, generate, iter_hash_ids, write_jsonl

    if trace_format is SynthFormat.native and trace_block_size is not None:
        raise UsageError("--trace-block-size applies to --format hash-ids only")
    try:
        config = SynthConfig(
            seed=seed, orgs=orgs, users_per_org=users_per_org, sessions_per_user=sessions_per_user,
            min_turns=min_turns, max_turns=max_turns, breaker_rate=breaker_rate,
            system_words=_range("--system-words", system_words), tools_per_org=_range("--tools", tools),
            **({"block_size": trace_block_size} if trace_block_size else {}),
        )
    except ConfigError as e:
        raise UsageError(str(e)) from None
    records = generate(config) if trace_format is SynthFormat.native else iter_hash_ids(config, with_session=True)
    try:
        n = write_jsonl(records, sys.stdout if output == "-" else output)
    except BrokenPipeError:
        raise
    except OSError as e:
        from kvcache.engine.errors import KVCacheError

        raise KVCacheError(f"{output}: cannot write: {e.strerror}") from e
    if output != "-":
        print(f"kvcache: wrote {n} requests to {output}", file=sys.stderr)
