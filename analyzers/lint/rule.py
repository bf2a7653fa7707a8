"""The lint rule base class and its registry.

One rule per file in ``analyzers/lint/rules/``, named after its code
(``kv101_timestamp_in_prefix.py``). A rule subclasses :class:`Rule`, sets its
class attributes, and is registered with :func:`register`, which rejects a
code that does not look like ``KV[1-5]NN``, a duplicate code or name, a name
that is not kebab-case, an unknown input kind, and a docstring without the five
sections every rule documents (ruff's layout)::

    What it does / Why is this bad? / Example / Use instead / References

Rules are pure: they read a :class:`~kvcache.analyzers.lint.document.LintDocument`
(or a pair of consecutive requests from a trace) and yield diagnostics; they
never print, and they never write files (fixes are applied by the runner).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from kvcache.analyzers.lint.diagnostic import SEVERITIES, Diagnostic, Fix, Severity
from kvcache.analyzers.lint.document import INPUT_KINDS, LintDocument

CODE_RE = re.compile(r"^KV[1-5]\d\d$")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DOC_SECTIONS: tuple[str, ...] = ("What it does", "Why is this bad?", "Example", "Use instead", "References")

# Code families: the first digit of the code.
FAMILIES = {
    "1": "volatile content in the prefix",
    "2": "unstable serialization",
    "3": "request parameters that change between turns",
    "4": "provider cache controls (breakpoints, TTL, minimum length, keys)",
    "5": "conversation history edits and timing",
}


class RuleError(Exception):
    """A rule that the registry refuses (a bug in the rule, not in user input)."""


@dataclass(slots=True)
class LintContext:
    """What rules may know beyond the document.

    Attributes:
        provider: ``anthropic``, ``openai``, ``gemini``, ``deepseek`` or ``None``
            (provider-aware rules then assume each provider's rules where they
            apply, or stay silent).
        model: the model name from ``--model``, when given (a body's own
            ``model`` field wins for that body).
    """

    provider: str | None = None
    model: str | None = None


class Rule:
    """Base class of every lint rule (see the module docstring)."""

    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity] = "warning"
    kinds: ClassVar[frozenset[str]] = frozenset()  # input kinds whose documents it checks
    pairs: ClassVar[bool] = False  # checks consecutive requests of a trace (check_pair)
    fixable: ClassVar[bool] = False

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        """Findings in one document (documents of ``kinds`` only)."""
        return iter(())

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        """Findings for a classified pair of requests (``pairs`` rules only)."""
        return iter(())

    # ------------------------------------------------------------------ helpers
    @classmethod
    def summary(cls) -> str:
        """The first paragraph under "What it does"."""
        return section(cls.__doc__ or "", "What it does").split("\n\n")[0].replace("\n", " ").strip()

    @classmethod
    def why(cls) -> str:
        return section(cls.__doc__ or "", "Why is this bad?").split("\n\n")[0].replace("\n", " ").strip()

    @classmethod
    def instead(cls) -> str:
        text = section(cls.__doc__ or "", "Use instead")
        return next((p.replace("\n", " ").strip() for p in text.split("\n\n") if p.strip() and not p.startswith("    ")), "")

    def diagnostic(
        self,
        doc: LintDocument,
        start: int,
        end: int,
        message: str,
        *,
        tokens_at_risk: int | None | Literal["auto"] = "auto",
        fix: Fix | None = None,
        severity: Severity | None = None,
    ) -> Diagnostic:
        """A finding over characters ``[start, end)`` of ``doc``.

        ``tokens_at_risk="auto"`` (the default) counts the prompt tokens after
        the span with :meth:`LintDocument.tokens_after`; pass a number to give
        it, or ``None`` when it cannot be known.
        """
        line, col = doc.position(start)
        end_line, end_col = doc.position(max(end, start))
        risk = doc.tokens_after(end) if tokens_at_risk == "auto" else tokens_at_risk
        return Diagnostic(
            code=self.code, name=self.name, message=message, severity=severity or self.severity,
            path=doc.path, line=line, col=col, end_line=end_line, end_col=end_col,
            tokens_at_risk=risk, fix=fix, why=self.why(), instead=self.instead(), context=doc.line_text(line),
        )


def section(doc: str, title: str) -> str:
    """The text of one docstring section (up to the next known section title)."""
    lines = [ln.strip() if not ln.startswith("        ") else ln[4:] for ln in doc.splitlines()]
    text = "\n".join(lines)
    start = text.find(title)
    if start < 0:
        return ""
    start += len(title)
    ends = [text.find(t, start) for t in DOC_SECTIONS if text.find(t, start) > 0]
    return text[start : min(ends) if ends else len(text)].strip(" :\n-")


REGISTRY: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: check the rule and add it to :data:`REGISTRY`."""
    code = getattr(cls, "code", None)
    if not isinstance(code, str) or not CODE_RE.match(code):
        raise RuleError(f"{cls.__name__}: code {code!r} is not KV followed by a family digit 1-5 and two digits")
    if code in REGISTRY:
        raise RuleError(f"{cls.__name__}: code {code} is already taken by {REGISTRY[code].__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RuleError(f"{code}: name {name!r} must be kebab-case")
    if any(r.name == name for r in REGISTRY.values()):
        raise RuleError(f"{code}: name {name!r} is already taken")
    if cls.severity not in SEVERITIES:
        raise RuleError(f"{code}: severity {cls.severity!r} is not one of {', '.join(SEVERITIES)}")
    unknown = set(cls.kinds) - set(INPUT_KINDS)
    if unknown:
        raise RuleError(f"{code}: unknown input kinds {sorted(unknown)}")
    if not cls.kinds and not cls.pairs:
        raise RuleError(f"{code}: checks nothing (no input kinds and no request pairs)")
    doc = cls.__doc__ or ""
    missing = [s for s in DOC_SECTIONS if s not in doc]
    if missing:
        raise RuleError(f"{code}: docstring lacks the section(s) {', '.join(missing)}")
    REGISTRY[code] = cls
    return cls


def all_rules() -> dict[str, type[Rule]]:
    """Every rule, by code (imports ``analyzers/lint/rules`` once)."""
    from kvcache.analyzers.lint import rules  # noqa: F401  (importing registers them)

    return dict(sorted(REGISTRY.items()))
