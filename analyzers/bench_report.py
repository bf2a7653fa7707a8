"""The ``kvcache bench`` report: derived rates, JSON, CSV and the rich table.

Takes plain rows (the kernels layer's ``ImplResult.as_row()``) and adds what
follows from them and the ceiling::

    gbps            = bytes_moved / median              (10^9 bytes/s)
    pct_of_ceiling  = 100 * gbps / copy_gbps            (copy_ counts read + write)
    tflops          = flops / median / 10^12            (4 * Hq * D * causal pairs)
    energy_j_per_step, energy_j_per_token = window energy / steps, / (steps * tokens)

The JSON object has exactly three keys: ``env``, ``ceiling`` and ``results``
(``compare`` is added by ``--compare``). Rows carry :data:`RESULT_FIELDS`
first, then :data:`EXTRA_FIELDS`.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path
from typing import Any

from kvcache.engine.errors import KVCacheError

RESULT_FIELDS = (
    "op", "impl", "batch", "context", "block_size", "heads_q", "heads_kv", "head_dim", "dtype",
    "median_ms", "p20_ms", "p80_ms", "gbps", "pct_of_ceiling", "tflops", "max_rel_err",
    "energy_j_per_token",
)
EXTRA_FIELDS = (
    "q_len", "status", "bytes_moved", "flops", "tokens", "cuda_graph", "energy_j_per_step",
    "power_w", "sm_clock_mhz", "throttle_reasons", "energy_method", "energy_window_s", "energy_steps",
    "notes",
)
ENV_FIELDS = ("torch", "cuda", "driver", "device", "cpu", "git_sha", "argv", "repro_command")


def git_sha(where: Path | None = None) -> str | None:
    """HEAD of the checkout this package runs from, or None outside a git checkout."""
    root = where or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(info: dict[str, Any], argv: list[str], repro_command: str,
                power: dict[str, Any]) -> dict[str, Any]:
    """The ``env`` object: :data:`ENV_FIELDS`, then the rest of ``info`` and the power status.

    Args:
        info: the kernels layer's ``device_info`` (torch, cuda, device, cpu, ...).
        power: ``measured`` (bool), ``reason`` (why not), ``monitor`` (its info()).
    """
    monitor = power.get("monitor") or {}
    driver = monitor.get("driver_version", monitor.get("driver")) if isinstance(monitor, dict) else None
    env = {"torch": info.get("torch"), "cuda": info.get("cuda"), "driver": driver,
           "device": info.get("device"), "cpu": info.get("cpu"), "git_sha": git_sha(),
           "argv": list(argv), "repro_command": repro_command}
    env.update({k: v for k, v in info.items() if k not in env})
    env["power_measured"] = bool(power.get("measured"))
    env["power_reason"] = power.get("reason")
    if monitor:
        env["power_monitor"] = monitor
    return env


def _per_unit(window: Any, units: float) -> float | None:
    """analyzers/energy.py's ``per_unit`` when it is there; the same sum otherwise."""
    try:
        from kvcache.analyzers.energy import per_unit
    except ImportError:
        energy = getattr(window, "energy_j", None)
        return None if energy is None or not units else energy / units
    return per_unit(window, units)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _plain(value: Any) -> Any:
    """JSON-safe throttle reasons and the like."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def result_row(raw: dict[str, Any], copy_gbps: float | None) -> dict[str, Any]:
    """One output row from a kernels row: rates, energy, and the fields in order."""
    raw = dict(raw)
    window, steps = raw.pop("energy_window", None), raw.pop("energy_steps", 0)
    median = raw.get("median_ms")
    row: dict[str, Any] = {k: raw.get(k) for k in RESULT_FIELDS}
    row.update({k: raw.get(k) for k in EXTRA_FIELDS})
    row["max_rel_err"] = _finite(raw.get("max_rel_err"))
    if median:
        row["gbps"] = raw["bytes_moved"] / (median / 1e3) / 1e9
        row["pct_of_ceiling"] = 100 * row["gbps"] / copy_gbps if copy_gbps else None
        row["tflops"] = raw["flops"] / (median / 1e3) / 1e12
    row["energy_j_per_step"] = row["energy_j_per_token"] = None
    row["power_w"] = row["sm_clock_mhz"] = row["throttle_reasons"] = None
    row["energy_method"] = row["energy_window_s"] = None
    row["energy_steps"] = steps or None
    if window is not None and steps:
        row["energy_j_per_step"] = _per_unit(window, steps)
        row["energy_j_per_token"] = _per_unit(window, steps * raw["tokens"])
        row["power_w"] = getattr(window, "avg_power_w", None)
        row["sm_clock_mhz"] = getattr(window, "sm_clock_mhz", None)
        row["throttle_reasons"] = _plain(getattr(window, "throttle_reasons", None))
        row["energy_method"] = getattr(window, "method", None)
        row["energy_window_s"] = getattr(window, "seconds", None)
        if row["energy_j_per_step"] is None:
            why = getattr(window, "note", None) or "no power readings"
            row["notes"] = [*(row["notes"] or []), f"energy not measured: {why}"]
    row["notes"] = list(row.get("notes") or [])
    return row


def build_report(env: dict[str, Any], ceiling: dict[str, Any], raw_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON object: ``{"env", "ceiling", "results"}``."""
    rows = [result_row(r, ceiling.get("copy_gbps")) for r in raw_rows]
    return {"env": env, "ceiling": dict(ceiling), "results": rows}


def failed_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r.get("status") == "failed"]


# ---------------------------------------------------------------- files
def write_json(report: dict[str, Any], path: str | Path) -> None:
    _write(path, json.dumps(report, indent=2, default=str) + "\n")


def _write(path: str | Path, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise KVCacheError(f"{path}: cannot write: {e.strerror or e}") from None


def write_csv(report: dict[str, Any], path: str | Path) -> None:
    """One line per result, :data:`RESULT_FIELDS` then :data:`EXTRA_FIELDS`; empty for null."""
    fields = RESULT_FIELDS + EXTRA_FIELDS
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(fields)
            for r in report["results"]:
                cells = []
                for k in fields:
                    v = r.get(k)
                    if isinstance(v, list):
                        v = "; ".join(str(x) for x in v)
                    cells.append("" if v is None else v)
                w.writerow(cells)
    except OSError as e:
        raise KVCacheError(f"{path}: cannot write: {e.strerror or e}") from None


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``kvcache bench --format json`` file; one-line errors on anything else."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise KVCacheError(f"cannot read bench results {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise KVCacheError(f"{p}: not a text file") from None
    except json.JSONDecodeError as e:
        raise KVCacheError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise KVCacheError(f"{p}: expected kvcache bench JSON, an object with a 'results' list")
    for i, r in enumerate(data["results"]):
        missing = [k for k in ("op", "impl", "batch", "context", "median_ms") if not isinstance(r, dict) or k not in r]
        if missing:
            raise KVCacheError(f"{p}: results[{i}] lacks {', '.join(missing)}")
        m = r["median_ms"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0):
            raise KVCacheError(f"{p}: results[{i}].median_ms must be a non-negative number or null, got {m!r}")
    if not isinstance(data.get("ceiling"), dict):
        data["ceiling"] = {}
    if not isinstance(data.get("env"), dict):
        data["env"] = {}
    return data


# ---------------------------------------------------------------- table
def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def skipped_notes(report: dict[str, Any]) -> list[str]:
    """One line per skipped implementation and reason."""
    seen: dict[tuple[str, str], None] = {}
    for r in report["results"]:
        if r.get("status") == "skipped":
            for note in r.get("notes") or ["skipped"]:
                seen[(r["impl"], note)] = None
    return [f"{impl} skipped: {note}" for impl, note in seen]


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def shape_label(r: dict[str, Any]) -> str:
    """Three short lines: op and lengths; batch, block and heads; head_dim and dtype."""
    q = f" q={r.get('q_len')}" if r["op"] == "prefill" else ""
    return (f"{r['op']} L={r['context']}{q}\nB={r['batch']} blk={r['block_size']}\n"
            f"H={r['heads_q']}/{r['heads_kv']} D={r['head_dim']} {r['dtype']}")


def render_table(report: dict[str, Any], console: Any) -> None:
    """The results as a rich table (one section per shape), then the ceiling, power and notes."""
    from rich import box
    from rich.table import Table

    env, ceil = report["env"], report["ceiling"]
    rows = [r for r in report["results"] if r.get("status") != "skipped"]
    energy = any(r.get("energy_j_per_token") is not None for r in rows)
    t = Table(title=f"kvcache bench: {env.get('device') or 'unknown device'}", box=box.SIMPLE_HEAD,
              pad_edge=False)
    t.add_column("shape", overflow="fold")
    t.add_column("impl", no_wrap=True)
    for col in ("ms\np20-p80", "GB/s", "%ceil", "TFLOP/s", "rel err"):
        t.add_column(col, justify="right", no_wrap=True)
    if energy:
        t.add_column("mJ/token", justify="right")
        t.add_column("W", justify="right")
    last = None
    for r in rows:
        label = shape_label(r)
        if last is not None and label != last:
            t.add_section()
        ok = r.get("status") == "ok"
        cells = [
            label if label != last else "", r["impl"],
            (_ms(r.get("median_ms")) if ok else f"[red]{str(r.get('status')).upper()}[/red]")
            + ("" if r.get("p20_ms") is None else f"\n[dim]{_ms(r['p20_ms'])}-{_ms(r['p80_ms'])}[/dim]"),
            _num(r.get("gbps"), ".1f"), _num(r.get("pct_of_ceiling"), ".0f"),
            _num(r.get("tflops"), ".3f"), _num(r.get("max_rel_err"), ".0e"),
        ]
        if energy:
            j = r.get("energy_j_per_token")
            cells += ["-" if j is None else f"{j * 1e3:.3g}", _num(r.get("power_w"), ".0f")]
        t.add_row(*cells)
        last = label
    console.print(t)
    if "copy_gbps" in ceil:
        line = f"copy ceiling: {ceil['copy_gbps']:.1f} GB/s (copy_ of {ceil.get('copy_mib', '?')} MiB, read + write)"
        if ceil.get("matmul_tflops") is not None:
            line += f"; matmul {ceil['matmul_tflops']:.2f} TFLOP/s ({ceil.get('matmul_dtype')}, n={ceil.get('matmul_n')})"
        console.print(line)
    console.print("[dim]GB/s: bytes moved (K+V of the context, q, out, block table) / median; "
                  "TFLOP/s: 4 x Hq x D x causal (query, key) pairs / median[/dim]")
    llc = env.get("cpu_llc_mib")
    small = [r for r in rows if r.get("gbps") is not None and r.get("bytes_moved", 1 << 62) < (llc or 0) * 2**20]
    if env.get("device_kind") == "cpu" and small:
        console.print(f"[dim]note: {len(small)} results move less than the CPU's {llc:.0f} MiB last-level "
                      f"cache, so they may run from cache and exceed the copy ceiling[/dim]")
    if not env.get("power_measured"):
        console.print(f"[dim]power was not measured: {env.get('power_reason') or 'no reason given'}[/dim]")
    for note in skipped_notes(report):
        console.print(f"[dim]note: {note}[/dim]")
    for r in failed_rows(report):
        console.print(f"[red]FAILED[/red] {r['op']} {r['impl']} B={r['batch']} ctx={r['context']} "
                      f"{r['dtype']}: {'; '.join(r.get('notes') or [])}")
    for r in rows:
        if r.get("status") == "ok" and r.get("notes"):
            console.print(f"[dim]note: {r['op']} {r['impl']} ctx={r['context']}: {'; '.join(r['notes'])}[/dim]")
