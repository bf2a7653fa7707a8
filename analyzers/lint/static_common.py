"""Glue the KV1xx/KV2xx rules share: run a text finder over a document, report a trace pair.

``prompt_spans`` runs a finder (``static_text.find_*``) over the prefix of a
``text``/``template`` document (from the end of the front matter to the first
user-turn marker) or over each string of a body's system prompt and tools, and
returns file offsets. ``pair_findings`` turns a classified pair of trace
requests into a finding at the later request's line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.static_body import BodyString, prefix_strings, raw_offsets
from kvcache.analyzers.lint.static_text import Span, merge, prefix_end

TextFinder = Callable[[str, int, int], Iterable[Span]]


def prompt_spans(doc: LintDocument, finder: TextFinder, strings: Iterable[BodyString] | None = None
                 ) -> Iterator[tuple[int, int, str, str]]:
    """``(start, end, what, where)`` for each merged finding in the prefix of ``doc``.

    ``where`` names the part (``the prompt``, ``the system prompt``, ``the tools``).
    ``strings`` narrows a body to some of its prefix strings.
    """
    if doc.kind in ("text", "template"):
        start = doc.prompt_start
        for s, e, what in merge(finder(doc.text, start, prefix_end(doc.text, start))):
            yield s, e, what, "the prompt"
    elif doc.kind == "body":
        for bs in prefix_strings(doc.body) if strings is None else strings:
            spans = merge(finder(bs.value, 0, len(bs.value)))
            span = doc.span_of(*bs.path)
            if not spans or span is None:
                continue
            offsets = raw_offsets(doc.text, span[0], len(bs.value))
            for s, e, what in spans:
                yield offsets[s], offsets[e], what, bs.part


def chain(*finders: TextFinder) -> TextFinder:
    """One finder that runs several."""
    def run(text: str, start: int, end: int) -> Iterator[Span]:
        for f in finders:
            yield from f(text, start, end)
    return run


def pair_findings(rule: Any, pair: Any, kind: Any, what: str) -> Iterator[Diagnostic]:
    """The finding for a classified request pair that shows ``kind`` (as its main edit or another), if it does.

    It sits on the later request's line, column 1, with ``tokens_at_risk`` =
    the classification's ``tokens_recomputed``; the message reads
    ``{what} since request X: {detail}; N prompt tokens recomputed``.
    """
    verdict = pair.classification
    if kind is not verdict.kind and kind not in verdict.others:
        return
    detail = verdict.detail if kind is verdict.kind and verdict.detail else kind.value.replace("-", " ")
    since = (f"from request {pair.prev.request_id} (another session)" if pair.relation == "org"
             else f"since request {pair.prev.request_id}")
    cur, n = pair.cur, verdict.tokens_recomputed
    yield Diagnostic(
        code=rule.code, name=rule.name, message=f"{what} {since}: {detail}; {n:,} prompt tokens recomputed",
        severity=rule.severity, path=cur.path, line=cur.line, col=1, end_line=cur.line, end_col=2,
        tokens_at_risk=n, why=rule.why(), instead=rule.instead())
