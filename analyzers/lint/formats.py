"""Findings as text, JSON, SARIF 2.1.0 or GitHub workflow commands.

Every renderer takes the findings already ordered (most tokens at risk first)
and returns a string; nothing here prints. ``sarif`` writes what GitHub code
scanning accepts: one run, the tool's rules with their docs, results with
physical locations (character columns, ``columnKind: unicodeCodePoints``) and a
``partialFingerprints`` entry that survives lines moving (it hashes the code,
the path and the flagged line's text, not its number).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import DOC_SECTIONS, FAMILIES, Rule

FORMATS: tuple[str, ...] = ("text", "json", "sarif", "github")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}
FINGERPRINT_KEY = "kvcache/v1"
# Where docs/rules.md is published; each SARIF rule then gets a helpUri
# (``<RULES_URL>#kv101``). SARIF wants an absolute URI there, and this project
# has no public address yet, so it is left out until one is set.
RULES_URL: str | None = None
CONTEXT_WIDTH = 100

_ANSI = {"bold": "\x1b[1m", "red": "\x1b[31m", "yellow": "\x1b[33m", "cyan": "\x1b[36m", "dim": "\x1b[2m",
         "reset": "\x1b[0m"}
_SEVERITY_COLOR = {"error": "red", "warning": "yellow", "info": "cyan"}


# ---------------------------------------------------------------------------- text
def text(diagnostics: Sequence[Diagnostic], *, color: bool = False, show_fixes: bool = False) -> str:
    """ruff-like lines: ``path:line:col: CODE [*] message``, the source line, a caret run."""

    def c(style: str, s: str) -> str:
        return f"{_ANSI[style]}{s}{_ANSI['reset']}" if color else s

    out = []
    for d in diagnostics:
        mark = " [*]" if d.fix is not None else ""
        out.append(f"{c('bold', f'{d.path}:{d.line}:{d.col}:')} "
                   f"{c(_SEVERITY_COLOR[d.severity], d.code)}{mark} {d.message}")
        risk = "" if d.tokens_at_risk is None else f" {d.tokens_at_risk:,} tokens at risk"
        if d.context:
            shown, start, width = _window(d)
            gutter = " " * len(str(d.line))
            out.append(f" {gutter} |")
            out.append(f" {d.line} | {shown}")
            out.append(f" {gutter} | {' ' * start}{c(_SEVERITY_COLOR[d.severity], '^' * width)}{risk}")
        elif risk:
            out.append(f"   ={risk}")
        if show_fixes and d.fix is not None:
            out.append(f"   = fix: {d.fix.message}")
    return "\n".join(out) + ("\n" if out else "")


def _window(d: Diagnostic) -> tuple[str, int, int]:
    """The context line cut to :data:`CONTEXT_WIDTH` around the span; caret start and width."""
    line = "".join(ch if ch.isprintable() else " " for ch in d.context)
    start = d.col - 1
    end = d.end_col - 1 if d.end_line == d.line else len(line)
    end = max(end, start + 1)
    lo = 0
    if len(line) > CONTEXT_WIDTH:
        lo = max(0, min(start - 20, len(line) - CONTEXT_WIDTH))
        hi = lo + CONTEXT_WIDTH
        prefix = "…" if lo > 0 else ""
        shown = prefix + line[lo:hi] + ("…" if hi < len(line) else "")
        start = start - lo + len(prefix)
        end = min(end - lo + len(prefix), len(shown))
        return shown, start, max(1, end - start)
    return line, start, max(1, min(end, max(len(line), start + 1)) - start)


def summary(diagnostics: Sequence[Diagnostic], *, files: int, fixed: int = 0, fix_mode: bool = False,
            errors: int = 0) -> str:
    """One closing line: counts, what --fix would or did do, tokens at risk, inputs that failed."""
    n = len(diagnostics)
    checked = f"{files} file{'s' * (files != 1)}"
    failed = f"; {errors} input{'s' * (errors != 1)} could not be linted (see stderr)" if errors else ""
    if n == 0:
        if fixed:
            return f"Found {fixed} finding{'s' * (fixed != 1)} ({fixed} fixed, 0 remaining) in {checked}{failed}."
        return f"All checks passed ({checked} checked){failed}."
    fixable = sum(d.fix is not None for d in diagnostics)
    risk = sum(d.tokens_at_risk or 0 for d in diagnostics)
    head = f"Found {n + fixed} findings ({fixed} fixed, {n} remaining)" if fixed else f"Found {n} finding{'s' * (n != 1)}"
    parts = [f"{head} in {len({d.path for d in diagnostics})} of {checked}"]
    if fixable and not fix_mode:
        parts.append(f"{fixable} fixable with --fix")
    if risk:
        parts.append(f"{risk:,} prompt tokens at risk")
    return "; ".join(parts) + failed + "."


def statistics(diagnostics: Iterable[Diagnostic]) -> list[dict[str, Any]]:
    """Per code: count, how many are fixable, tokens at risk; most frequent first."""
    rows: dict[str, dict[str, Any]] = {}
    for d in diagnostics:
        r = rows.setdefault(d.code, {"code": d.code, "name": d.name, "count": 0, "fixable": 0, "tokens_at_risk": 0})
        r["count"] += 1
        r["fixable"] += d.fix is not None
        r["tokens_at_risk"] += d.tokens_at_risk or 0
    return sorted(rows.values(), key=lambda r: (-r["count"], r["code"]))


def statistics_text(rows: list[dict[str, Any]]) -> str:
    """One line per code: ``  3  KV101  [*] name  (1,234 tokens at risk)``."""
    width = max((len(str(r["count"])) for r in rows), default=1)
    out = []
    for r in rows:
        risk = f"  ({r['tokens_at_risk']:,} tokens at risk)" if r["tokens_at_risk"] else ""
        out.append(f"{r['count']:>{width}}  {r['code']}  {'[*]' if r['fixable'] else '   '} {r['name']}{risk}\n")
    return "".join(out)


# ---------------------------------------------------------------------------- json
def to_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_dict() for d in diagnostics], indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- github
def github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands: ``::warning file=...,line=...::message``."""
    out = []
    for d in diagnostics:
        props = ",".join(f"{k}={_gh_prop(str(v))}" for k, v in (
            ("file", d.path), ("line", d.line), ("col", d.col), ("endLine", d.end_line),
            ("endColumn", d.end_col), ("title", d.code)))
        risk = "" if d.tokens_at_risk is None else f" ({d.tokens_at_risk:,} tokens at risk)"
        out.append(f"::{GITHUB_LEVEL[d.severity]} {props}::{_gh_data(f'{d.name}: {d.message}{risk}')}")
    return "\n".join(out) + ("\n" if out else "")


def _gh_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


# ---------------------------------------------------------------------------- sarif
def sarif(diagnostics: Sequence[Diagnostic], catalog: dict[str, type[Rule]], *, version: str,
          errors: Sequence[Exception] = (), root: str | None = None) -> str:
    """A SARIF 2.1.0 log with one run (see the module docstring)."""
    root = root or os.getcwd()
    codes = sorted(catalog)
    index = {code: i for i, code in enumerate(codes)}
    rules = [_sarif_rule(catalog[code]) for code in codes]
    results = []
    seen: Counter[str] = Counter()
    for d in diagnostics:
        base = fingerprint(d)
        seen[base] += 1
        region = {"startLine": d.line, "startColumn": d.col, "endLine": d.end_line, "endColumn": d.end_col}
        if d.context:
            region["snippet"] = {"text": d.context}
        result: dict[str, Any] = {
            "ruleId": d.code,
            "level": SARIF_LEVEL[d.severity],
            "message": {"text": d.message},
            "locations": [{"physicalLocation": {"artifactLocation": _artifact(d.path, root), "region": region}}],
            "partialFingerprints": {FINGERPRINT_KEY: f"{base}:{seen[base]}"},
            "properties": {"tokens_at_risk": d.tokens_at_risk, "name": d.name},
        }
        if d.code in index:
            result["ruleIndex"] = index[d.code]
        results.append(result)
    notifications = [{"level": "error", "message": {"text": str(e)}} for e in errors]
    log = {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [{
            "tool": {"driver": {"name": "kvcache", "version": version, "semanticVersion": version, "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {"%SRCROOT%": {"uri": Path(root).resolve().as_uri() + "/"}},
            "invocations": [{"executionSuccessful": not errors, "toolExecutionNotifications": notifications}],
            "results": results,
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


def fingerprint(d: Diagnostic) -> str:
    """sha256 of code, path and the flagged line's text with whitespace collapsed."""
    text = " ".join((d.context or d.message).split())
    return hashlib.sha256(f"{d.code}\0{Path(d.path).as_posix()}\0{text}".encode()).hexdigest()


def _artifact(path: str, root: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(Path(root).resolve())
        except ValueError:
            return {"uri": p.as_uri()}
    rel = os.path.normpath(p.as_posix()).replace(os.sep, "/")
    return {"uri": quote(rel), "uriBaseId": "%SRCROOT%"}


def _sarif_rule(cls: type[Rule]) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": cls.code,
        "name": cls.name,
        "shortDescription": {"text": rule_title(cls)},
        "fullDescription": {"text": " ".join(_plain(cls.summary()).split())},
        "help": {"text": rule_text(cls), "markdown": rule_markdown(cls, level=2)},
        "defaultConfiguration": {"level": SARIF_LEVEL[cls.severity]},
        "properties": {"tags": ["prompt-caching", FAMILIES.get(cls.code[2], "kvcache")],
                       "kinds": sorted(cls.kinds) + (["trace pairs"] if cls.pairs else []), "fixable": cls.fixable},
    }
    if RULES_URL:
        rule["helpUri"] = f"{RULES_URL}#{cls.code.lower()}"
    return rule


# ---------------------------------------------------------------------------- rule docs
_TITLE_RE = re.compile(r"^\s*#*\s*(?P<t>" + "|".join(re.escape(t.rstrip("?")) for t in DOC_SECTIONS) + r")\??\s*:?\s*$")


def rule_title(cls: type[Rule], width: int = 90) -> str:
    """One line for tables: the docstring's first line, else the summary's first sentence, shortened."""
    lines = rule_text(cls).splitlines()
    if lines and lines[0].strip() and not _TITLE_RE.match(lines[0]):
        title = lines[0]
    else:
        title = re.split(r"(?<=[.!?])\s", cls.summary(), maxsplit=1)[0]
    title = " ".join(_plain(title).split())
    if len(title) <= width:
        return title
    cut = min((i for i in (title.find(": "), title.find("; ")) if 0 < i < width), default=-1)
    if cut > 0:
        return title[:cut] + "."
    return title[: title.rfind(" ", 0, width)] + " …"


def _plain(s: str) -> str:
    """RST literals (````x````) as Markdown ones (```x```); fences (`````````) are left alone."""
    return re.sub(r"(?<!`)``(?!`)([^`]+?)(?<!`)``(?!`)", r"`\1`", s)


def rule_text(cls: type[Rule]) -> str:
    """The rule's docstring, dedented."""
    return inspect.cleandoc(cls.__doc__ or "")


def rule_markdown(cls: type[Rule], level: int = 1) -> str:
    """The rule's docs as Markdown: a heading, its facts, the five sections as sub-headings.

    Docstrings may mark sections as ``## What it does`` (ruff), ``What it does:``
    (with the text under it indented or not: Google style, dedented here) or an
    underlined title; all become headings one level below the rule's.
    """
    lines = rule_text(cls).splitlines()
    title = ""
    if lines and not _TITLE_RE.match(lines[0]):
        title, lines = lines[0].strip(), lines[1:]
    sections: list[tuple[str, bool, list[str]]] = [("", False, [])]  # (title, Markdown heading?, lines)
    i = 0
    while i < len(lines):
        m = _TITLE_RE.match(lines[i])
        if m:
            name = next(t for t in DOC_SECTIONS if t.rstrip("?") == m.group("t"))
            sections.append((name, lines[i].lstrip().startswith("#"), []))
            if i + 1 < len(lines) and re.fullmatch(r"\s*[-=~]{3,}\s*", lines[i + 1]):
                i += 1
        else:
            sections[-1][2].append(lines[i][:-1] if lines[i].endswith("::") else lines[i])  # RST "text::"
        i += 1
    parts = []
    for name, markdown, body in sections:
        # under "Title:" the text may be indented (Google style); under "## Title" indenting means code
        text_ = ("\n".join(body) if markdown else textwrap.dedent("\n".join(body))).strip("\n")
        if name:
            parts.append(f"{'#' * (level + 1)} {name}")
        if text_:
            parts.append(text_)
    kinds = ", ".join(sorted(cls.kinds) + (["trace pairs"] if cls.pairs else []))
    facts = f"*{cls.name}* · severity **{cls.severity}** · checks {kinds} · {'fixable' if cls.fixable else 'not fixable'}"
    title = " ".join(title.split()) if title else rule_title(cls)
    out = "\n\n".join([f"{'#' * level} {cls.code} {cls.name}", title, facts, *parts])
    return _plain(re.sub(r"\n{3,}", "\n\n", out)) + "\n"
