"""Run the rules over inputs: build documents, call rules, collect findings.

:func:`lint_source` and :func:`lint_document` lint one in-memory input (the
fixtures' entry point). ``batch.py`` builds ``kvcache lint`` on top: files and
folders, selection, per-file ignores, ``kvcache: noqa`` and safe fixes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.json_spans import JSONSpanError, parse_with_spans
from kvcache.analyzers.lint.rule import LintContext, Rule, all_rules

KIND_BY_SUFFIX = {
    ".txt": "text", ".md": "text", ".markdown": "text",
    ".j2": "template", ".jinja": "template", ".jinja2": "template", ".tmpl": "template", ".prompt": "template",
    ".json": "body",
    ".py": "python",
    ".jsonl": "trace", ".gz": "trace",
}


class LintInputError(Exception):
    """An input that cannot be linted: one line with where and what was expected."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line
        self.message = message


def kind_for(path: str) -> str | None:
    """The input kind a file name implies, or ``None``."""
    return KIND_BY_SUFFIX.get(Path(path).suffix.lower())


def build_document(text: str, kind: str, path: str, ctx: LintContext | None = None) -> LintDocument:
    """Parse ``text`` as ``kind`` into a document.

    Raises:
        LintInputError: invalid JSON, invalid Python, or invalid YAML front matter.
    """
    ctx = ctx or LintContext()
    doc = LintDocument(path=path, kind=kind, text=text, model=ctx.model, provider=ctx.provider)  # type: ignore[arg-type]
    if kind == "body":
        try:
            doc.body, doc.body_spans = parse_with_spans(text)
        except JSONSpanError as e:
            raise LintInputError(path, e.line, f"not valid JSON ({e}); expected one request body object") from None
        if isinstance(doc.body, dict) and isinstance(doc.body.get("model"), str):
            doc.model = doc.body["model"]
    elif kind == "python":
        try:
            doc.tree = ast.parse(text, filename=path)
        except SyntaxError as e:
            raise LintInputError(path, e.lineno, f"not valid Python ({e.msg})") from None
    elif kind in ("text", "template"):
        _front_matter(doc)
    return doc


def _front_matter(doc: LintDocument) -> None:
    text = doc.text
    if not text.startswith("---\n"):
        return
    end = text.find("\n---", 4)
    if end < 0:
        raise LintInputError(doc.path, 1, "YAML front matter opened with --- is never closed")
    try:
        import yaml
    except ImportError:  # pyyaml is optional; front matter is then skipped but not parsed
        doc.prompt_start = text.find("\n", end + 1) + 1 or len(text)
        return
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        raise LintInputError(doc.path, line, f"invalid YAML front matter ({getattr(e, 'problem', None) or e})") from None
    if data is not None and not isinstance(data, dict):
        raise LintInputError(doc.path, 2, "YAML front matter must be a mapping")
    doc.front_matter = data or {}
    nl = text.find("\n", end + 1)
    doc.prompt_start = nl + 1 if nl >= 0 else len(text)


def selected_rules(select: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> list[Rule]:
    """Rule instances whose code starts with a selected prefix and no ignored one."""
    rules = all_rules()
    sel = tuple(select) if select is not None else ("KV",)
    ign = tuple(ignore)
    return [cls() for code, cls in rules.items() if code.startswith(sel) and not (ign and code.startswith(ign))]


def lint_document(doc: LintDocument, rules: list[Rule], ctx: LintContext) -> list[Diagnostic]:
    """Every finding of ``rules`` in ``doc``, most costly first."""
    out: list[Diagnostic] = []
    for rule in rules:
        if doc.kind in rule.kinds:
            out.extend(rule.check(doc, ctx))
    out.sort(key=Diagnostic.sort_key)
    return out


def lint_source(
    text: str, kind: str, path: str = "<input>", ctx: LintContext | None = None, select: Iterable[str] | None = None
) -> list[Diagnostic]:
    """Lint one in-memory input (the fixtures' entry point). Traces go through :func:`lint_trace`."""
    ctx = ctx or LintContext()
    rules = selected_rules(select)
    if kind == "trace":
        return lint_trace(path, rules, ctx, text=text)
    return lint_document(build_document(text, kind, path, ctx), rules, ctx)


def lint_trace(path: str, rules: list[Rule], ctx: LintContext, text: str | None = None) -> list[Diagnostic]:
    """Findings on consecutive requests of a trace (see ``classify.py``).

    ``text`` lints JSONL held in memory instead of reading ``path``.
    """
    from kvcache.analyzers.lint.classify import trace_pairs

    pair_rules = [r for r in rules if r.pairs]
    out: list[Diagnostic] = []
    for pair in trace_pairs(path, ctx, text=text):
        for rule in pair_rules:
            out.extend(rule.check_pair(pair, ctx))
    out.sort(key=Diagnostic.sort_key)
    return out
