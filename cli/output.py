"""The output object: one place that turns results into a table, JSON or CSV/JSONL."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from kvcache.cli.errors import UsageError

PER_REQUEST_FIELDS = (
    "request_id", "session_id", "org", "arrival", "prompt_tokens", "cached_tokens",
    "hit_blocks", "blocks", "first_miss_block", "rejected",
    "billed_prompt_tokens", "billed_cached_tokens", "ttft_s", "e2e_s", "preemptions",
    "predicted_cached_billed_tokens",
)


def _quiet_broken_pipe() -> None:
    """Output piped into `head`: stop quietly with exit 0, as the JSON path does.

    Rich's default exits 1. Point stdout at /dev/null first so that flushing at
    interpreter exit cannot raise again.
    """
    import os

    import typer

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


def _fmt_seconds(values: list[float]) -> str:
    """Several durations in one unit: ``8.5/23/26 ms`` or ``1.2/3.4/9.9 s``."""
    if max(values) < 1:
        return "/".join(f"{v * 1000:.3g}" for v in values) + " ms"
    return "/".join(f"{v:.3g}" for v in values) + " s"


def _fmt_rate(x: float) -> str:
    return f"{x:.4f} ({x * 100:.1f}%)"


@dataclass
class Output:
    """Renders a result in the chosen format.

    Attributes:
        format: ``table`` (rich, for people) or ``json`` (one object on stdout).
        quiet: suppress progress bars and notes on stderr.
    """

    format: str = "table"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("table", "json"):
            raise UsageError(f"unknown output format {self.format!r}; choose table or json")

    # ------------------------------------------------------------------ progress
    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Any]:
        """A rich progress bar on stderr, or a no-op when quiet or not a TTY.

        Yields a callable ``advance(n)``.
        """
        if self.quiet or not sys.stderr.isatty():
            yield lambda n=1: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn()] if total else []
        columns += [TimeElapsedColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def warn(self, message: str) -> None:
        if not self.quiet:
            print(f"kvcache: warning: {message}", file=sys.stderr)

    # ------------------------------------------------------------------ replay
    def replay(self, data: dict[str, Any], top: int = 10) -> None:
        if self.format == "json":
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.on_broken_pipe = _quiet_broken_pipe  # type: ignore[method-assign]
        s = data["summary"]
        cap = "unbounded" if s["capacity_blocks"] is None else f"{s['capacity_blocks']:,} blocks ({s['usable_blocks']:,} usable)"
        t = Table(title=f"kvcache replay: {s['trace']} ({s['input_format']})", show_header=True)
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_column("definition", style="dim")
        t.add_row("requests", f"{s['requests']:,}", "")
        t.add_row("prompt tokens", f"{s['prompt_tokens']:,}", "")
        t.add_row("cached tokens", f"{s['cached_tokens']:,}", "prompt tokens served from the prefix cache")
        t.add_row("token hit rate", _fmt_rate(s["token_hit_rate"]), s["definitions"]["token_hit_rate"])
        blocks_def = (f"trace blocks of {s['block_size']} tokens (hit cap none: every hash id)" if s["hit_cap"] == "none"
                      else f"full prompt blocks of {s['block_size']} tokens")
        t.add_row("prompt blocks", f"{s['blocks']:,}", blocks_def)
        t.add_row("hit blocks", f"{s['hit_blocks']:,}", "leading blocks found in the cache")
        t.add_row("block hit rate", _fmt_rate(s["block_hit_rate"]), s["definitions"]["block_hit_rate"])
        if s["provider"] == "vllm":
            t.add_row("capacity", cap, "--kv-blocks counts vLLM's reserved null block")
            t.add_row("evicted blocks", f"{s['evicted_blocks']:,}", "cached blocks reallocated (LRU)")
            t.add_row("peak cached blocks", f"{s['peak_cached_blocks']:,}", "most distinct block hashes cached at once")
        else:
            t.add_row("provider", s["provider"], "hosted cache rules from engine/data/providers.json")
            t.add_row("expired entries", f"{s['evicted_blocks']:,}", "entries pruned after their TTL (swept every 5 min of trace time)")
        sched = s.get("scheduler")
        if sched is not None:
            hw = f"{sched['cost_model_shape']} on {sched['hardware']} (roofline, simulated)"
            for key, label in (("ttft_s", "TTFT"), ("e2e_s", "end-to-end")):
                p = sched[key]
                if p is not None:
                    t.add_row(f"{label} p50/90/99", _fmt_seconds([p["p50"], p["p90"], p["p99"]]), hw)
            t.add_row("preemptions", f"{sched['preemptions']:,}", "recompute preemptions when blocks ran out")
            kv_bytes = sched["peak_kv_bytes"]
            t.add_row("peak KV in use", f"{sched['peak_kv_blocks']:,}" + (f" ({kv_bytes / 2**30:.2f} GiB)" if kv_bytes else ""),
                      f"blocks held by running requests (GiB at {sched['cost_model_shape']}'s KV shape)")
            if sched["prefill_compute_saved_gpu_s"] is not None:
                t.add_row("prefill compute saved", f"{sched['prefill_compute_saved_gpu_s']:,.2f} GPU-s", sched["definitions"]["prefill_compute_saved_gpu_s"])
        comp = s.get("compute")
        if comp is not None:
            t.add_row("model (--compute)", comp["model"], f"{comp['kv_pool_blocks']:,}-block pool, attention: {comp['attn_impl']}")
            t.add_row("prefill tokens skipped", f"{comp['prefill_tokens_skipped']:,}", "read from cached pages instead of computed")
            t.add_row("tokens computed", f"{comp['prefill_tokens'] + comp['decode_tokens']:,}", f"{comp['tokens_per_second']:,.0f} tokens/s on this machine")
        ver = s.get("verify")
        if ver is not None:
            t.add_row("verify max rel err", f"{ver['max_rel_err']:.2e}", f"last-prompt-token logits vs an empty-cache recompute, {ver['requests']:,} requests")
        if s["rejected_requests"]:
            t.add_row("rejected requests", f"{s['rejected_requests']:,}", "too large for the whole pool")
        t.add_row("skipped lines", f"{s['skipped_lines']:,}", "malformed lines skipped by --skip-invalid")
        pvb = s["predicted_vs_billed"]
        if pvb is not None:
            t.add_row("billed prompt tokens", f"{s['billed_prompt_tokens']:,}", f"{pvb['calls']:,} calls with usage in the trace")
            t.add_row("billed cached tokens", f"{s['billed_cached_tokens']:,}", "what the provider billed as cache reads")
            t.add_row("billed hit rate", _fmt_rate(s["billed_token_hit_rate"]), s["definitions"]["billed_token_hit_rate"])
            t.add_row("predicted hit rate", _fmt_rate(pvb["predicted_token_hit_rate"]), "predicted reads in billed units / billed prompt tokens")
            t.add_row("calibration ratio", f"{pvb['calibration_ratio']}", "billed prompt tokens / our prompt tokens")
            t.add_row("per-call error", f"{pvb['per_call_abs_error_share']:.4f}", s["definitions"]["per_call_abs_error_share"])
            if pvb["uncached_error"] is not None:
                t.add_row("uncached error", f"{pvb['uncached_error']:+.4f}", s["definitions"]["uncached_error"])
        console.print(t)
        if pvb is not None and pvb["largest_disagreements"] and top > 0:
            d = Table(title="calls where prediction and bill disagree most")
            for k in ("request_id", "session_id", "predicted read", "billed read", "billed prompt", "first miss block"):
                d.add_column(k, justify="left" if k in ("request_id", "session_id") else "right", overflow="fold")
            for r in pvb["largest_disagreements"][:top]:
                d.add_row(str(r["request_id"]), str(r["session_id"]), f"{r['predicted_cached_tokens']:,}",
                          f"{r['billed_cached_tokens']:,}", f"{r['billed_prompt_tokens']:,}",
                          "-" if r["first_miss_block"] is None else str(r["first_miss_block"]))
            console.print(d)
        self._group_table(console, Table, "orgs", data["orgs"], ["org"], top)
        self._group_table(console, Table, "sessions (most uncached tokens first)", data["sessions"], ["session_id", "org"], top)
        for note in s["notes"]:
            console.print(f"[dim]note: {note}[/dim]")

    @staticmethod
    def _group_table(console: Any, table_cls: Any, title: str, rows: list[dict[str, Any]], keys: list[str], top: int) -> None:
        if not rows or top <= 0:
            return
        shown = rows[:top]
        more = f" (top {top} of {len(rows)})" if len(rows) > top else ""
        t = table_cls(title=f"{title}{more}")
        for k in keys:
            t.add_column(k, overflow="ellipsis" if k == "org" else "fold", max_width=40 if k == "session_id" else 12)
        for k in ("reqs", "prompt tok", "cached tok", "token hit", "block hit"):
            t.add_column(k, justify="right")
        for r in shown:
            t.add_row(
                *[str(r[k]) if r[k] is not None else "-" for k in keys],
                f"{r['requests']:,}", f"{r['prompt_tokens']:,}", f"{r['cached_tokens']:,}",
                f"{r['token_hit_rate']:.4f}", f"{r['block_hit_rate']:.4f}",
            )
        console.print(t)


class PerRequestWriter:
    """Writes one row per request to ``.csv`` or ``.jsonl``, as results arrive."""

    def __init__(self, path: str) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise UsageError(f"--per-request must end in .csv or .jsonl, got {path!r}")
        self.path = path
        self.kind = suffix[1:]
        try:
            self._fh: IO[str] = open(path, "w", newline="", encoding="utf-8")
        except OSError as e:
            from kvcache.engine.errors import KVCacheError

            raise KVCacheError(f"{path}: cannot write: {e.strerror}") from e
        self._csv = csv.writer(self._fh) if self.kind == "csv" else None
        if self._csv is not None:
            self._csv.writerow(PER_REQUEST_FIELDS)

    def write(self, result: Any) -> None:
        from kvcache.analyzers.billing import calibrated_prediction

        predicted = calibrated_prediction(result)
        row = [getattr(result, f) for f in PER_REQUEST_FIELDS[:-1]]
        row.append(None if predicted is None else round(predicted))
        if self._csv is not None:
            self._csv.writerow(["" if v is None else v for v in row])
        else:
            self._fh.write(json.dumps(dict(zip(PER_REQUEST_FIELDS, row))) + "\n")

    def close(self) -> None:
        self._fh.close()
