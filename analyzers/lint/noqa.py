"""Inline suppressions: ``kvcache: noqa`` and ``kvcache: noqa: KV101, KV102``.

Where the marker may sit:

* ``text`` and ``template`` inputs: anywhere on the line. Put it in a comment
  that the renderer drops (``{# kvcache: noqa: KV101 #}``) or that Markdown
  hides (``<!-- kvcache: noqa: KV101 -->``); a bare marker is sent with the prompt;
* ``python`` inputs: in a ``#`` comment (found with :mod:`tokenize`, so a string
  that happens to contain the marker does not count);
* ``body`` and ``trace`` inputs have no comments; use ``per-file-ignores``.

A directive suppresses findings on its line: those that start there and, for a
finding spanning lines (a triple-quoted string), those that end there. A bare
``kvcache: noqa`` suppresses every code. A marker right after a backtick or a
quote is a mention (docs that explain the syntax), not a directive.

Directives that suppress nothing are reported as ``KV000 unused-noqa`` (the
runner's own code; rules are KV1xx-KV5xx), like ruff's RUF100.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import Rule

UNUSED_NOQA = "KV000"

# "kvcache: noqa", optionally followed by ": CODE[, CODE ...]".
NOQA_RE = re.compile(r"kvcache:\s*noqa(?P<colon>:\s*(?P<codes>[A-Za-z]+\d+(?:\s*,?\s*[A-Za-z]+\d+)*)?)?", re.I)
CODE_RE = re.compile(r"[A-Za-z]+\d+")
QUOTES = "`'\""


@dataclass(slots=True)
class Directive:
    """One ``kvcache: noqa`` comment.

    Attributes:
        line, col, end_col: where the marker is (1-based, end exclusive).
        codes: the codes it names, or ``None`` for a bare marker (all codes).
        used: the codes it suppressed (``"*"`` for a bare marker that did).
    """

    line: int
    col: int
    end_col: int
    codes: tuple[str, ...] | None
    used: set[str] = field(default_factory=set)

    def matches(self, code: str) -> bool:
        return self.codes is None or code in self.codes


class UnusedNoqa(Rule):
    """Unused ``kvcache: noqa`` directive.

    ## What it does
    Reports a `kvcache: noqa` comment that suppresses nothing.

    No finding of the codes it names (or, for a bare marker, of any code)
    starts or ends on its line. Also reports a marker whose code list is empty, and codes that no
    rule has. Codes of rules not selected for the file are not reported. This
    is the runner's own check (rules are KV1xx-KV5xx); select or ignore it as
    `KV000`.

    ## Why is this bad?
    A stale suppression hides the next real finding on that line, and in a
    plain-text prompt the marker itself is sent to the model.

    ## Example
        You are a helpful assistant. {# kvcache: noqa: KV101 #}

    ## Use instead
    Remove the directive, or the codes in it that no longer fire:

        You are a helpful assistant.

    ## References
    - ruff's RUF100 (unused-noqa): https://docs.astral.sh/ruff/rules/unused-noqa/
    """

    code = UNUSED_NOQA
    name = "unused-noqa"
    severity = "warning"
    kinds = frozenset({"text", "template", "python"})


def directives(doc: LintDocument) -> list[Directive]:
    """Every directive in ``doc`` (none for ``body`` and ``trace`` inputs)."""
    text = doc.text
    if doc.kind not in ("text", "template", "python") or "noqa" not in text.lower():
        return []
    if doc.kind == "python":
        spans = _python_comments(text, doc)
    else:
        spans = ((0, len(text)),)
    out = []
    for start, end in spans:
        for m in NOQA_RE.finditer(text, start, end):
            if m.start() > 0 and text[m.start() - 1] in QUOTES:
                continue  # `kvcache: noqa` quoted in prose or a comment is a mention, not a directive
            codes: tuple[str, ...] | None = None
            if m.group("colon"):
                raw = m.group("codes") or ""
                codes = tuple(c.upper() for c in CODE_RE.findall(raw))
            line, col = doc.position(m.start())
            out.append(Directive(line, col, col + (m.end() - m.start()), codes))
    return out


def _python_comments(text: str, doc: LintDocument) -> Iterator[tuple[int, int]]:
    """Character spans of the ``#`` comments of Python source."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                start = doc.offset(*_col1(tok.start))
                yield start, start + len(tok.string)
    except (tokenize.TokenError, SyntaxError):
        return


def _col1(pos: tuple[int, int]) -> tuple[int, int]:
    return pos[0], pos[1] + 1


def suppress(diagnostics: Iterable[Diagnostic], found: list[Directive]) -> list[Diagnostic]:
    """The findings no directive suppresses; marks the directives that were used."""
    if not found:
        return list(diagnostics)
    by_line: dict[int, list[Directive]] = {}
    for d in found:
        by_line.setdefault(d.line, []).append(d)
    kept = []
    for diag in diagnostics:
        hit = None
        for line in (diag.line, diag.end_line):
            hit = next((d for d in by_line.get(line, ()) if d.matches(diag.code)), None)
            if hit is not None:
                break
        if hit is None:
            kept.append(diag)
        else:
            hit.used.add(diag.code)
    return kept


def unused(doc: LintDocument, found: list[Directive], enabled: frozenset[str], known: Iterable[str]) -> list[Diagnostic]:
    """``KV000`` findings for directives (or codes in them) that suppressed nothing.

    ``enabled`` are the codes that ran on this file: a code that is known but
    not selected is not reported, since it could not have been used.
    """
    known = set(known)
    out = []
    for d in found:
        if d.codes is None:
            if not d.used:
                out.append(_finding(doc, d, "unused `kvcache: noqa` directive (nothing to suppress on this line)"))
            continue
        if not d.codes:
            out.append(_finding(doc, d, "`kvcache: noqa:` names no codes; expected e.g. `kvcache: noqa: KV101`"))
            continue
        unknown = [c for c in d.codes if c not in known]
        stale = [c for c in d.codes if c in known and c in enabled and c not in d.used]
        parts = []
        if stale:
            parts.append(f"unused (nothing to suppress): {', '.join(stale)}")
        if unknown:
            parts.append(f"unknown code(s): {', '.join(unknown)}")
        if parts:
            out.append(_finding(doc, d, f"`kvcache: noqa` directive: {'; '.join(parts)}"))
    return out


def _finding(doc: LintDocument, d: Directive, message: str) -> Diagnostic:
    return UnusedNoqa().diagnostic(
        doc, doc.offset(d.line, d.col), doc.offset(d.line, d.end_col), message, tokens_at_risk=None
    )
