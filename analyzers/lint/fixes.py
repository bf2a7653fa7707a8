"""Apply the safe fixes of a set of findings to a file's text.

Edits are applied from the end of the file backwards so earlier positions stay
valid; an edit that overlaps one already taken is skipped (the next run of
``--fix`` picks it up), as ruff does.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit
from kvcache.analyzers.lint.document import LintDocument


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic]) -> str:
    """``text`` with every non-overlapping fix of ``diagnostics`` applied."""
    doc = LintDocument("<fix>", "text", text)
    spans: list[tuple[int, int, Edit]] = []
    for d in diagnostics:
        if d.fix is None:
            continue
        for e in d.fix.edits:
            spans.append((doc.offset(e.line, e.col), doc.offset(e.end_line, e.end_col), e))
    spans.sort(key=lambda s: (s[0], s[1]))
    out = text
    limit = len(text) + 1
    for start, end, edit in reversed(spans):
        if end > limit:
            continue  # overlaps an edit already applied
        out = out[:start] + edit.replacement + out[end:]
        limit = start
    return out
