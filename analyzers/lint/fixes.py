"""Apply the safe fixes of a set of findings to a file's text, and show them as a diff.

A fix is applied whole or not at all. Fixes are taken in order of where they
start; one that overlaps a fix already taken is skipped (the next pass of
``--fix`` picks it up once the file is re-linted), as ruff does. Identical
fixes reported by two findings are applied once. Edits are then applied from
the end of the file backwards so earlier positions stay valid::

    text:    ....[fix A.....]..[fix B]....[fix C overlaps B]...
    taken:       A              B          (C waits for the next pass)
    applied: B first, then A (from the end)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit, Fix
from kvcache.analyzers.lint.document import LintDocument


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic]) -> str:
    """``text`` with every non-overlapping fix of ``diagnostics`` applied."""
    return fix_text(text, diagnostics)[0]


def fix_text(text: str, diagnostics: Iterable[Diagnostic]) -> tuple[str, list[Diagnostic]]:
    """``text`` with the non-overlapping fixes applied, and the findings whose fix was applied."""
    doc = LintDocument("<fix>", "text", text)
    candidates: list[tuple[int, int, Fix, list[tuple[int, int, Edit]], Diagnostic]] = []
    for d in diagnostics:
        if d.fix is None or not d.fix.edits:
            continue
        spans = sorted(((doc.offset(e.line, e.col), doc.offset(e.end_line, e.end_col), e) for e in d.fix.edits),
                       key=lambda s: (s[0], s[1]))
        candidates.append((spans[0][0], max(s[1] for s in spans), d.fix, spans, d))
    candidates.sort(key=lambda c: (c[0], c[1]))
    taken: list[tuple[int, int, Edit]] = []
    applied: list[Diagnostic] = []
    seen: set[tuple[Edit, ...]] = set()
    last_end = -1
    for start, end, fix, spans, diag in candidates:
        if fix.edits in seen:
            applied.append(diag)  # the same fix, reported twice
            continue
        if start < last_end:
            continue  # overlaps a fix already taken
        seen.add(fix.edits)
        taken.extend(spans)
        applied.append(diag)
        last_end = end
    out = text
    for start, end, edit in sorted(taken, key=lambda s: (s[0], s[1]), reverse=True):
        out = out[:start] + edit.replacement + out[end:]
    return out, applied


def changes_prompt(diagnostics: Iterable[Diagnostic]) -> bool:
    """Whether any of these fixes changes the bytes a provider sees."""
    return any(d.fix is not None and d.fix.changes_prompt for d in diagnostics)


def unified_diff(path: str, before: str, after: str) -> str:
    """A unified diff of a fix, headed ``--- path`` / ``+++ path`` (empty when nothing changes)."""
    if before == after:
        return ""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=path, tofile=path
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)
