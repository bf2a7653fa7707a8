"""The rule registry refuses rules that break the catalogue's conventions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvcache.analyzers.lint.rule import DOC_SECTIONS, REGISTRY, Rule, RuleError, all_rules, register

DOC = """A test rule.

What it does:
    Nothing.

Why is this bad?
    It is not.

Example:
    x

Use instead:
    y

References:
    - none
"""


def make(code: str = "KV199", name: str = "test-rule", doc: str = DOC, kinds=frozenset({"text"}), pairs=False):
    return type("TestRule", (Rule,), {"code": code, "name": name, "__doc__": doc, "kinds": kinds, "pairs": pairs})


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    all_rules()  # the real rules are registered first
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


@pytest.mark.parametrize("code", ["KV601", "KV01", "kv101", "XX101", "KV1011", None])
def test_bad_codes_are_refused(code) -> None:
    with pytest.raises(RuleError, match="code"):
        register(make(code=code))


def test_a_taken_code_or_name_is_refused() -> None:
    with pytest.raises(RuleError, match="already taken"):
        register(make(code="KV101"))
    with pytest.raises(RuleError, match="already taken"):
        register(make(name=all_rules()["KV101"].name))


@pytest.mark.parametrize("section", DOC_SECTIONS)
def test_a_missing_doc_section_is_refused(section: str) -> None:
    with pytest.raises(RuleError, match="lacks the section"):
        register(make(doc=DOC.replace(section, "Something else")))


def test_bad_names_kinds_and_empty_rules_are_refused() -> None:
    with pytest.raises(RuleError, match="kebab-case"):
        register(make(name="Test_Rule"))
    with pytest.raises(RuleError, match="unknown input kinds"):
        register(make(kinds=frozenset({"yaml"})))
    with pytest.raises(RuleError, match="checks nothing"):
        register(make(kinds=frozenset()))


def test_a_good_rule_registers_and_every_real_rule_is_documented() -> None:
    assert register(make()) is REGISTRY["KV199"]
    for code, cls in all_rules().items():
        if code == "KV199":
            continue
        assert cls.summary() and cls.why() and cls.instead(), code
