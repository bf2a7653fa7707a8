"""Applying fixes whole, skipping overlaps, and the --diff text (analyzers/lint/fixes.py)."""

from __future__ import annotations

from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit, Fix
from kvcache.analyzers.lint.fixes import apply_fixes, changes_prompt, fix_text, unified_diff


def fixed(line: int, col: int, end_col: int, replacement: str, *more: Edit, changes: bool = True) -> Diagnostic:
    edits = (Edit(line, col, line, end_col, replacement), *more)
    return Diagnostic("KV201", "x", "m", "warning", "p", line, col, line, end_col,
                      fix=Fix("f", edits, changes_prompt=changes))


def test_apply_from_the_end() -> None:
    text = "abc def ghi\nxyz\n"
    out = apply_fixes(text, [fixed(1, 1, 4, "ABCD"), fixed(1, 9, 12, "G"), fixed(2, 1, 4, "")])
    assert out == "ABCD def G\n\n"


def test_overlapping_fix_waits_whole() -> None:
    text = "0123456789"
    a = fixed(1, 1, 4, "A")  # [0, 3)
    b = fixed(1, 3, 5, "B", Edit(1, 9, 1, 10, "Z"))  # overlaps a: none of its edits apply
    c = fixed(1, 6, 7, "C")
    out, applied = fix_text(text, [b, c, a])
    assert out == "A34C6789"
    assert applied == [a, c] and "Z" not in out


def test_identical_fixes_apply_once() -> None:
    a, b = fixed(1, 1, 2, "X"), fixed(1, 1, 2, "X")
    out, applied = fix_text("ab", [a, b])
    assert out == "Xb" and applied == [a, b]


def test_multi_line_edit_and_insertions() -> None:
    text = "line1\nline2\nline3\n"
    d = Diagnostic("KV202", "x", "m", "warning", "p", 1, 3, 3, 2,
                   fix=Fix("f", (Edit(1, 3, 3, 2, "-"), Edit(3, 6, 3, 6, "!"))))
    assert apply_fixes(text, [d]) == "li-ine3!\n"


def test_no_fix_no_change() -> None:
    d = Diagnostic("KV101", "x", "m", "warning", "p", 1, 1, 1, 2)
    assert fix_text("abc", [d]) == ("abc", [])


def test_changes_prompt() -> None:
    assert changes_prompt([fixed(1, 1, 2, "x")])
    assert not changes_prompt([fixed(1, 1, 2, "x", changes=False)])


def test_unified_diff() -> None:
    assert unified_diff("p.json", "a\n", "a\n") == ""
    d = unified_diff("p.json", "a\nb\n", "a\nc")
    assert d.startswith("--- p.json\n+++ p.json\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n")
