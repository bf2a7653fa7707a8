"""``kvcache: noqa`` directives and KV000 (analyzers/lint/noqa.py)."""

from __future__ import annotations

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.noqa import UNUSED_NOQA, UnusedNoqa, directives, suppress, unused
from kvcache.analyzers.lint.rule import DOC_SECTIONS


def doc(text: str, kind: str = "text") -> LintDocument:
    return LintDocument("p", kind, text)  # type: ignore[arg-type]


def finding(code: str, line: int, end_line: int | None = None) -> Diagnostic:
    return Diagnostic(code, "x", "m", "warning", "p", line, 1, end_line or line, 2)


def test_directive_forms() -> None:
    d = directives(doc("a {# kvcache: noqa: KV101 #}\nb <!-- kvcache: noqa: KV101, kv102 -->\n"
                       "c kvcache: noqa\nd kvcache:noqa:KV101 KV103\ne KVCACHE: NOQA: KV104\nno marker\n"))
    assert [(x.line, x.codes) for x in d] == [(1, ("KV101",)), (2, ("KV101", "KV102")), (3, None),
                                             (4, ("KV101", "KV103")), (5, ("KV104",))]
    assert (d[0].col, d[0].end_col) == (6, 26)


def test_quoted_marker_is_a_mention() -> None:
    assert directives(doc("Use `kvcache: noqa` or \"kvcache: noqa: KV101\" in a comment.\n")) == []
    assert directives(doc('x = 1  # the "kvcache: noqa" syntax\n', "python")) == []


def test_directive_with_colon_but_no_codes() -> None:
    (d,) = directives(doc("x kvcache: noqa: because\n"))
    assert d.codes == ()


def test_python_only_comments_count() -> None:
    src = 'A = "kvcache: noqa"\nB = 1  # kvcache: noqa: KV101\nC = """\nkvcache: noqa\n"""\n'
    d = directives(doc(src, "python"))
    assert [(x.line, x.codes) for x in d] == [(2, ("KV101",))]


def test_python_that_does_not_tokenize_is_not_an_error() -> None:
    assert directives(doc('x = 1  # kvcache: noqa\ny = """never closed kvcache: noqa\n', "python"))[0].line == 1


def test_bodies_have_no_directives() -> None:
    assert directives(doc('{"a": "kvcache: noqa"}', "body")) == []


def test_suppress_by_line_and_code() -> None:
    d = directives(doc("l1 kvcache: noqa: KV101\nl2 kvcache: noqa\nl3\nl4 kvcache: noqa: KV102\n"))
    kept = suppress([finding("KV101", 1), finding("KV102", 1), finding("KV555", 2), finding("KV101", 3),
                     finding("KV102", 3, 4)], d)
    assert [(k.code, k.line) for k in kept] == [("KV102", 1), ("KV101", 3)]
    assert [x.used for x in d] == [{"KV101"}, {"KV555"}, {"KV102"}]  # a span ending on line 4 counts there


def test_unused_reports() -> None:
    text = "a kvcache: noqa\nb kvcache: noqa: KV101, KV102, KV999\nc kvcache: noqa: KV201\nd kvcache: noqa:\n"
    dd = doc(text)
    found = directives(dd)
    suppress([finding("KV101", 2)], found)
    out = unused(dd, found, enabled=frozenset({"KV101", "KV102"}), known={"KV101", "KV102", "KV201"})
    msgs = {d.line: d.message for d in out}
    assert set(msgs) == {1, 2, 4}  # KV201 is known but not enabled: not reported
    assert "unused (nothing to suppress): KV102; unknown code(s): KV999" in msgs[2]
    assert all(d.code == UNUSED_NOQA and d.name == "unused-noqa" and d.tokens_at_risk is None for d in out)
    assert out[0].context == "a kvcache: noqa"


def test_kv000_is_documented_like_a_rule() -> None:
    for s in DOC_SECTIONS:
        assert s in (UnusedNoqa.__doc__ or "")
    assert UnusedNoqa.summary().startswith("Reports a `kvcache: noqa` comment")
