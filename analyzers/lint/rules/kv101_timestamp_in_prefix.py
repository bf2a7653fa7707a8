"""KV101 timestamp-in-prefix: the current time rendered into the system prompt or tools."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from kvcache.analyzers.lint.classify import EditKind
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_common import pair_findings, prompt_spans
from kvcache.analyzers.lint.static_flow import flows, string_parts
from kvcache.analyzers.lint.static_python import Module, module
from kvcache.analyzers.lint.static_text import date_only_format, find_placeholders, find_timestamps, name_is

_NOW = frozenset({
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.now", "datetime.utcnow",
    "datetime.today", "time.time", "time.time_ns", "time.ctime", "time.asctime", "time.localtime", "time.gmtime",
    "arrow.now", "arrow.utcnow", "pendulum.now", "pandas.Timestamp.now", "pandas.Timestamp.utcnow"})
_COARSE_ATTRS = frozenset({"year", "month", "day", "date", "weekday", "isoweekday", "toordinal", "tm_year", "tm_mon",
                           "tm_mday", "tm_yday", "tm_wday"})
_TIME_DIRECTIVE = re.compile(r"%-?[HIMSpXcTRrsfkl]")


def _time_finder(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    yield from find_timestamps(text, start, end)
    yield from find_placeholders(text, "time", start, end)


def _format(node: ast.expr | None, mod: Module) -> str | None:
    """A strftime format given as a string constant, or a name assigned only that constant."""
    if isinstance(node, ast.Name):
        values = mod.values_of(node) or []
        node = values[0] if len(values) == 1 else None
    return string_parts(node) if node is not None else None


def classify(node: ast.AST, mod: Module) -> tuple[str | None, bool]:
    """Python: a clock read, kept unless it is cut down to the date on its way to the prompt."""
    if isinstance(node, ast.Call):
        q = mod.qualname(node.func) or ""
        if q in _NOW:
            return f"`{mod.source(node)}`", True
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if attr == "strftime" or q == "time.strftime":
            fmt = _format(node.args[0] if node.args else None, mod)
            if fmt is None or not _TIME_DIRECTIVE.search(fmt):
                return None, True  # a date-only (or unknown) format: nothing finer than the day
            if q == "time.strftime" and (len(node.args) < 2 or any(
                    isinstance(n, ast.Call) and (mod.qualname(n.func) or "") in _NOW for n in ast.walk(node.args[1]))):
                return f"`{mod.source(node)}`", True
        return None, attr in _COARSE_ATTRS
    if isinstance(node, ast.Attribute):
        if node.attr in _COARSE_ATTRS:
            return None, True
        dotted = mod.qualname(node)
        return (f"`{dotted}`", True) if dotted and name_is("time", dotted) else (None, False)
    if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
        spec = string_parts(node.format_spec)
        return None, bool(spec and date_only_format(spec))
    if isinstance(node, ast.Name):  # a name the walker could not trace (a parameter)
        return (f"`{node.id}`", True) if name_is("time", node.id) else (None, True)
    text = string_parts(node)
    if text is not None:
        found = next(find_placeholders(text, "time"), None)
        return (found[2], True) if found else (None, True)
    return None, False


@register
class TimestampInPrefix(Rule):
    """The current time rendered into the system prompt or tools.

    What it does:
    Finds the current time written into the cached prefix: clock times
    (``14:32:05``), ISO date-times (``2026-11-28T09:00:44Z``), labelled times
    (``Current time: 14:32``), time placeholders (``{datetime}``, ``{{ now }}``,
    ``{{ time }}``, ``${new Date()}``) in prompts, templates and a body's system
    prompt or tools; in Python, ``datetime.now()``, ``time.time()``,
    ``time.strftime("%H:%M")``, ``now.isoformat()`` flowing into a system prompt,
    ``prompt``, ``tools`` or ``messages[0]``; in traces, consecutive requests whose
    only difference is a date/time span.

    A date alone (``2026-11-28``, ``{date}``, ``strftime("%Y-%m-%d")``,
    ``date.today()``) is not reported: coarsening to the date is the advice, and it
    costs one cache miss a day. Bare ``HH:MM`` without seconds, a date or a time
    label is not reported either (``standup at 10:30`` is a schedule), nor are
    versions, ratios, ports and ``file:line:col`` references.

    Why is this bad?
    Prefix caching reuses only the tokens before the first byte that differs. A
    time that changes every request (or every minute) sits near the top of the
    prompt, so every token after it is recomputed and billed at the full rate on
    every call. opencode-agent-memory saw its hit rate drop from 94% to 15% (about
    13x the cost) from one timestamp.

    Example:
    The clock is read on every call and lands in the system prompt:

        system = f"You are a helpful agent.\\nCurrent time: {datetime.now().isoformat()}"

    Use instead:
    Coarsen the time to the date, or move it after the cached part (into the
    latest user message, or after the last cache breakpoint).

        system = f"You are a helpful agent.\\nToday's date: {date.today():%Y-%m-%d}"

    References:
    - https://github.com/aaif-goose/goose/issues/2434
    - https://github.com/Mintplex-Labs/anything-llm/issues/6398
    - https://github.com/CherryHQ/cherry-studio/issues/16398
    - https://github.com/joshuadavidthomas/opencode-agent-memory/issues/29
    """

    code = "KV101"
    name = "timestamp-in-prefix"
    severity = "warning"
    kinds = frozenset({"text", "template", "body", "python"})
    pairs = True

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for hit in flows(mod, classify, wide=True):
                start, end = mod.span(hit.node)
                yield self.diagnostic(doc, start, end, f"{hit.what} reads the clock and flows into {hit.sink.label}; "
                                      "the prefix changes on every call", tokens_at_risk=None)
            return
        for start, end, what, where in prompt_spans(doc, _time_finder):
            yield self.diagnostic(doc, start, end, f"{what} in {where} changes between requests")

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        yield from pair_findings(self, pair, EditKind.TIMESTAMP_DRIFT, "a timestamp in the prefix changed")
