"""``kvcache bench --compare``: this run's medians against a saved baseline.

Rows match on the shape (:data:`KEY_FIELDS`: op, impl, batch, context,
block_size, heads, head_dim, dtype and the prefill's q_len). For each match
``ratio = current median / baseline median``:

    ratio > max_slowdown        regression  (the command exits 1)
    ratio < 1 / max_slowdown    improvement
    otherwise                   within tolerance

Shapes present on one side only are listed, as are shapes timed on one side
but failed or skipped on the other; neither fails the comparison by itself (a
failed reference check already makes ``kvcache bench`` exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEY_FIELDS = ("op", "impl", "batch", "context", "block_size", "heads_q", "heads_kv", "head_dim",
              "dtype", "q_len")


def shape_key(row: dict[str, Any]) -> tuple:
    """The matching key; a missing q_len (older files) reads as 1 for decode."""
    key = [row.get(k) for k in KEY_FIELDS]
    if key[-1] is None and row.get("op") == "decode":
        key[-1] = 1
    return tuple(key)


def describe(key: tuple) -> str:
    k = dict(zip(KEY_FIELDS, key))
    q = f" q={k['q_len']}" if k["op"] == "prefill" else ""
    return (f"{k['op']} {k['impl']} B={k['batch']} ctx={k['context']}{q} blk={k['block_size']} "
            f"H={k['heads_q']}/{k['heads_kv']} D={k['head_dim']} {k['dtype']}")


@dataclass(slots=True)
class Change:
    key: tuple
    baseline_ms: float
    current_ms: float

    @property
    def ratio(self) -> float:
        return self.current_ms / self.baseline_ms if self.baseline_ms else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**dict(zip(KEY_FIELDS, self.key)), "baseline_ms": self.baseline_ms,
                "current_ms": self.current_ms, "ratio": self.ratio}


@dataclass(slots=True)
class Comparison:
    max_slowdown: float
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    unchanged: list[Change] = field(default_factory=list)
    missing_in_current: list[tuple] = field(default_factory=list)
    missing_in_baseline: list[tuple] = field(default_factory=list)
    not_timed: list[tuple[tuple, str]] = field(default_factory=list)  # (key, which side and why)

    @property
    def passed(self) -> bool:
        return not self.regressions

    def as_dict(self) -> dict[str, Any]:
        def keys(ks: list[tuple]) -> list[dict[str, Any]]:
            return [dict(zip(KEY_FIELDS, k)) for k in ks]

        return {
            "max_slowdown": self.max_slowdown, "passed": self.passed,
            "regressions": [c.as_dict() for c in self.regressions],
            "improvements": [c.as_dict() for c in self.improvements],
            "within_tolerance": len(self.unchanged),
            "missing_in_current": keys(self.missing_in_current),
            "missing_in_baseline": keys(self.missing_in_baseline),
            "not_timed": [{**dict(zip(KEY_FIELDS, k)), "why": why} for k, why in self.not_timed],
        }


def _index(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {shape_key(r): r for r in rows}


def compare(current: dict[str, Any], baseline: dict[str, Any], max_slowdown: float = 1.10) -> Comparison:
    """Compare two bench reports (the JSON objects) shape by shape.

    Raises:
        ValueError: ``max_slowdown`` below 1.
    """
    if not max_slowdown >= 1.0:
        raise ValueError(f"max_slowdown must be at least 1.0, got {max_slowdown}")
    cur, base = _index(current["results"]), _index(baseline["results"])
    out = Comparison(max_slowdown)
    for key, b in base.items():
        c = cur.get(key)
        if c is None:
            out.missing_in_current.append(key)
            continue
        bm, cm = b.get("median_ms"), c.get("median_ms")
        if bm is None or cm is None:
            side = "baseline" if bm is None else "current"
            status = (b if bm is None else c).get("status") or "not timed"
            if not (bm is None and cm is None):
                out.not_timed.append((key, f"{status} in the {side} run"))
            continue
        change = Change(key, bm, cm)
        if change.ratio > max_slowdown:
            out.regressions.append(change)
        elif change.ratio < 1.0 / max_slowdown:
            out.improvements.append(change)
        else:
            out.unchanged.append(change)
    out.missing_in_baseline = [k for k in cur if k not in base]
    out.regressions.sort(key=lambda ch: -ch.ratio)
    out.improvements.sort(key=lambda ch: ch.ratio)
    return out


def render_compare(cmp: Comparison, baseline_name: str, console: Any) -> None:
    """Regressions, improvements and unmatched shapes, then the verdict."""
    from rich.table import Table

    for title, changes, style in (("regressions", cmp.regressions, "red"),
                                  ("improvements", cmp.improvements, "green")):
        if not changes:
            continue
        t = Table(title=f"{title} against {baseline_name}", title_style=style)
        for col in ("shape", "baseline ms", "current ms", "ratio"):
            t.add_column(col, justify="left" if col == "shape" else "right")
        for ch in changes:
            t.add_row(describe(ch.key), f"{ch.baseline_ms:.3f}", f"{ch.current_ms:.3f}", f"{ch.ratio:.2f}x")
        console.print(t)
    for label, keys in (("missing in this run", cmp.missing_in_current),
                        ("new in this run (not in the baseline)", cmp.missing_in_baseline)):
        for k in keys:
            console.print(f"[yellow]{label}:[/yellow] {describe(k)}")
    for k, why in cmp.not_timed:
        console.print(f"[yellow]not compared:[/yellow] {describe(k)} ({why})")
    n = len(cmp.regressions) + len(cmp.improvements) + len(cmp.unchanged)
    if cmp.passed:
        console.print(f"compare: {n} shapes matched, none slower than {cmp.max_slowdown:.2f}x the baseline "
                      f"({len(cmp.improvements)} faster)")
    else:
        console.print(f"[red]compare: {len(cmp.regressions)} of {n} shapes slower than "
                      f"{cmp.max_slowdown:.2f}x the baseline[/red]")
