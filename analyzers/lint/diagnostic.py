"""What a lint rule reports: a finding, where it is, what it costs, how to fix it.

Positions are 1-based lines and 1-based columns counted in characters;
``end_col`` is exclusive (the column just after the span), as in SARIF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")


@dataclass(slots=True, frozen=True)
class Edit:
    """Replace the text between two positions (end exclusive) with ``replacement``."""

    line: int
    col: int
    end_line: int
    end_col: int
    replacement: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "col": self.col, "end_line": self.end_line, "end_col": self.end_col,
                "replacement": self.replacement}


@dataclass(slots=True, frozen=True)
class Fix:
    """A safe, mechanical fix.

    ``changes_prompt`` is true when applying it changes the bytes a provider
    sees, so the next request writes a new cache entry (the CLI warns).
    """

    message: str
    edits: tuple[Edit, ...]
    changes_prompt: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "edits": [e.to_dict() for e in self.edits],
                "changes_prompt": self.changes_prompt}


@dataclass(slots=True)
class Diagnostic:
    """One finding.

    Attributes:
        code, name: the rule (``KV101``, ``timestamp-in-prefix``).
        message: what is wrong here, in one line.
        severity: ``error`` (the API rejects it, or caching is off for
            everyone), ``warning`` or ``info``.
        path, line, col, end_line, end_col: where (1-based, end exclusive).
        tokens_at_risk: prompt tokens after the volatile span that can no
            longer be cached on every request; ``None`` when unknown (e.g.
            Python source, where the prompt is not materialised).
        fix: a safe fix, or ``None``.
        why, instead: the rule's reason and advice (from its docs).
        context: the source line, for ruff-like text output.
    """

    code: str
    name: str
    message: str
    severity: Severity
    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    tokens_at_risk: int | None = None
    fix: Fix | None = None
    why: str = ""
    instead: str = ""
    context: str = field(default="", repr=False)

    def sort_key(self) -> tuple[Any, ...]:
        """Most costly first; unknown cost after known; then by place."""
        risk = self.tokens_at_risk
        return (risk is None, -(risk or 0), self.path, self.line, self.col, self.code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "end_line": self.end_line,
            "end_col": self.end_col,
            "tokens_at_risk": self.tokens_at_risk,
            "fix": None if self.fix is None else self.fix.to_dict(),
            "why": self.why,
            "instead": self.instead,
        }
