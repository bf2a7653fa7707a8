"""docs/rules.md is generated from the registry; this checks the committed file is current."""

from __future__ import annotations

from pathlib import Path

from kvcache.analyzers.lint.batch import rule_catalog
from kvcache.cli.rules import catalog_markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
REGENERATE = "python -m kvcache.cli.rules --markdown > docs/rules.md"


def test_docs_rules_md_is_current() -> None:
    assert DOC.read_text() == catalog_markdown(), f"docs/rules.md is out of date; regenerate it: {REGENERATE}"


def test_every_rule_has_an_anchor() -> None:
    text = catalog_markdown()
    for code in rule_catalog():
        assert f'<a id="{code.lower()}"></a>' in text and f"](#{code.lower()})" in text
