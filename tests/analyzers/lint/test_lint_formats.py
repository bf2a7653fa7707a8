"""Text, GitHub and SARIF rendering and the rule docs (analyzers/lint/formats.py)."""

from __future__ import annotations

import json

from kvcache.analyzers.lint import formats
from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit, Fix
from kvcache.analyzers.lint.noqa import UnusedNoqa
from kvcache.analyzers.lint.rule import Rule


def diag(**kw) -> Diagnostic:
    base = dict(code="KV101", name="timestamp-in-prefix", message="a clock time", severity="warning", path="p.txt",
                line=2, col=5, end_line=2, end_col=10, tokens_at_risk=1234, context="abc\tNOW() tail")
    base.update(kw)
    return Diagnostic(**base)


def test_text_layout() -> None:
    out = formats.text([diag()]).splitlines()
    assert out == ["p.txt:2:5: KV101 a clock time", "   |", " 2 | abc NOW() tail", "   |     ^^^^^ 1,234 tokens at risk"]


def test_text_fixable_mark_show_fixes_and_color() -> None:
    d = diag(fix=Fix("sort", (Edit(2, 5, 2, 10, "x"),)), tokens_at_risk=None, context="")
    assert formats.text([d], show_fixes=True).splitlines() == ["p.txt:2:5: KV101 [*] a clock time", "   = fix: sort"]
    assert "\x1b[33mKV101" in formats.text([d], color=True)


def test_text_multi_line_span_underlines_to_end_of_line() -> None:
    out = formats.text([diag(end_line=4, end_col=2)]).splitlines()
    assert out[3] == "   |     ^^^^^^^^^^ 1,234 tokens at risk"


def test_text_zero_width_span_gets_one_caret() -> None:
    out = formats.text([diag(col=16, end_col=16, context="abc NOW() tail")]).splitlines()
    assert out[3].endswith("^ 1,234 tokens at risk") and out[3].count("^") == 1


def test_summary() -> None:
    d1, d2 = diag(), diag(path="q.txt", tokens_at_risk=None, fix=Fix("f", ()))
    assert formats.summary([], files=3) == "All checks passed (3 files checked)."
    assert formats.summary([d1, d2], files=3) == ("Found 2 findings in 2 of 3 files; 1 fixable with --fix; "
                                                  "1,234 prompt tokens at risk.")
    assert formats.summary([d1], files=1, fixed=2, fix_mode=True, errors=1) == (
        "Found 3 findings (2 fixed, 1 remaining) in 1 of 1 file; 1,234 prompt tokens at risk; "
        "1 input could not be linted (see stderr).")
    assert formats.summary([], files=1, fixed=1, fix_mode=True) == "Found 1 finding (1 fixed, 0 remaining) in 1 file."


def test_github_escapes() -> None:
    out = formats.github([diag(path="a:b,c.txt", message="50% off\nnow", severity="info")])
    assert out == ("::notice file=a%3Ab%2Cc.txt,line=2,col=5,endLine=2,endColumn=10,title=KV101::"
                   "timestamp-in-prefix: 50%25 off%0Anow (1,234 tokens at risk)\n")


def test_statistics() -> None:
    rows = formats.statistics([diag(), diag(tokens_at_risk=None), diag(code="KV201", name="x", fix=Fix("f", ()))])
    assert rows == [{"code": "KV101", "name": "timestamp-in-prefix", "count": 2, "fixable": 0, "tokens_at_risk": 1234},
                    {"code": "KV201", "name": "x", "count": 1, "fixable": 1, "tokens_at_risk": 1234}]
    assert formats.statistics_text(rows).splitlines()[1] == "1  KV201  [*] x  (1,234 tokens at risk)"


def test_sarif_levels_uris_and_repeated_fingerprints(tmp_path) -> None:
    ds = [diag(severity="info"), diag(line=7), diag(path=str(tmp_path / "sub dir" / "x.txt"), severity="error")]
    log = json.loads(formats.sarif(ds, {"KV000": UnusedNoqa}, version="9.9", root=str(tmp_path)))
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["KV000"]
    res = run["results"]
    assert [r["level"] for r in res] == ["note", "warning", "error"]
    assert all("ruleIndex" not in r for r in res)  # KV101 is not in this catalog
    assert res[2]["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "sub%20dir/x.txt", "uriBaseId": "%SRCROOT%"}
    fps = [r["partialFingerprints"]["kvcache/v1"] for r in res]
    assert fps[0].split(":")[0] == fps[1].split(":")[0] and fps[0].endswith(":1") and fps[1].endswith(":2")
    assert run["columnKind"] == "unicodeCodePoints" and run["invocations"][0]["executionSuccessful"] is True


def test_sarif_rule_entry() -> None:
    log = json.loads(formats.sarif([], {"KV000": UnusedNoqa}, version="1"))
    (rule,) = log["runs"][0]["tool"]["driver"]["rules"]
    assert rule["id"] == "KV000" and rule["name"] == "unused-noqa"
    assert rule["shortDescription"]["text"] == "Unused `kvcache: noqa` directive."
    assert rule["help"]["markdown"].startswith("## KV000 unused-noqa") and "helpUri" not in rule
    formats.RULES_URL = "https://example.org/docs/rules.md"
    try:
        log = json.loads(formats.sarif([], {"KV000": UnusedNoqa}, version="1"))
        assert log["runs"][0]["tool"]["driver"]["rules"][0]["helpUri"] == "https://example.org/docs/rules.md#kv000"
    finally:
        formats.RULES_URL = None


class ColonStyle(Rule):
    """Colon-style docs.

    What it does:
    Checks ``things``.

    Why is this bad?
    Because.

    Example:
    Like this::

        bad()

    Use instead:
        good()

    References:
    - https://example.org
    """

    code, name, kinds = "KV199", "colon-style", frozenset({"text"})


class HeadingStyle(Rule):
    """## What it does
    Checks.

    ## Why is this bad?
    Because.

    ## Example
        bad()

    ## Use instead
        good()

    ## References
    - none
    """

    code, name, kinds = "KV198", "heading-style", frozenset({"text"})


def test_rule_markdown_from_either_docstring_style() -> None:
    md = formats.rule_markdown(ColonStyle, level=2)
    assert md.startswith("## KV199 colon-style\n\nColon-style docs.\n\n*colon-style* · severity **warning** · checks text")
    for s in ("### What it does", "### Why is this bad?", "### Example", "### Use instead", "### References"):
        assert f"\n{s}\n" in md
    assert "Checks `things`." in md and "Like this:\n\n    bad()" in md
    md = formats.rule_markdown(HeadingStyle)
    assert md.startswith("# KV198 heading-style\n\nChecks.\n") and "\n## Example\n\n    bad()" in md
    assert formats.rule_title(HeadingStyle) == "Checks."
