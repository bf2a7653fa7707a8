"""Every case of every rule's YAML fixture (format: fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from kvcache.analyzers.lint.rule import LintContext, all_rules  # noqa: E402
from kvcache.analyzers.lint.runner import lint_source  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT_PATHS = {"text": "prompt.txt", "template": "prompt.j2", "body": "request.json", "python": "build.py",
                 "trace": "trace.jsonl"}


def load_cases() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("KV*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert data["rule"] == path.stem, f"{path.name}: rule {data['rule']} does not match the file name"
        names = [c["name"] for c in data["cases"]]
        assert len(names) == len(set(names)), f"{path.name}: case names repeat"
        for case in data["cases"]:
            params.append(pytest.param(data["rule"], case, id=f"{data['rule']}-{case['name']}"))
    return params


CASES = load_cases()


def test_every_rule_has_a_fixture_with_passing_and_failing_cases() -> None:
    rules = all_rules()
    by_rule: dict[str, list[dict]] = {}
    for p in CASES:
        code, case = p.values
        by_rule.setdefault(code, []).append(case)
    assert set(by_rule) == set(rules), f"rules without fixtures: {sorted(set(rules) - set(by_rule))}"
    for code, cases in by_rule.items():
        assert any(c["expect"] == [] for c in cases), f"{code}: no passing case"
        assert any(c["expect"] for c in cases), f"{code}: no failing case"
        if rules[code].fixable:
            assert any("fixed" in c for c in cases), f"{code}: fixable but no fix case"


@pytest.mark.parametrize(("code", "case"), CASES)
def test_fixture_case(code: str, case: dict) -> None:
    from kvcache.analyzers.lint.fixes import apply_fixes

    kind = case["kind"]
    path = case.get("path", DEFAULT_PATHS[kind])
    ctx = LintContext(**case.get("options", {}))
    found = [d for d in lint_source(case["input"], kind, path, ctx, select=[code]) if d.code == code]
    expect = case["expect"]
    assert len(found) == len(expect), [(d.line, d.col, d.message) for d in found]
    found.sort(key=lambda d: (d.line, d.col))
    for d, e in zip(found, sorted(expect, key=lambda e: (e["line"], e.get("col", 0)))):
        assert d.line == e["line"], (d.line, d.col, d.message)
        for key in ("col", "end_line", "end_col", "tokens_at_risk", "severity"):
            if key in e:
                assert getattr(d, key) == e[key], (key, getattr(d, key), d.message)
        if "message_contains" in e:
            assert e["message_contains"] in d.message, d.message
    if "fixed" in case:
        assert apply_fixes(case["input"], found) == case["fixed"]
