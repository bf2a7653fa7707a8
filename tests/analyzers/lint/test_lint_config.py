"""Selection layers, globs and ``[tool.kvcache.lint]`` parsing (analyzers/lint/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcache.analyzers.lint.config import (
    Layer,
    LintConfig,
    LintConfigError,
    check_selectors,
    find_pyproject,
    glob_regex,
    ignored_for,
    load_config,
    path_matches,
    resolve,
    split_codes,
)

CODES = ["KV000", "KV101", "KV102", "KV201", "KV202", "KV401"]


def test_split_codes() -> None:
    assert split_codes(["KV1, kv201", "ALL", ""]) == ["KV1", "KV201", "KV"]
    assert split_codes(None) is None


@pytest.mark.parametrize(("layers", "expected"), [
    ([], CODES),
    ([Layer(select=["KV1"])], ["KV101", "KV102"]),
    ([Layer(select=["KV1"], ignore=["KV101"])], ["KV102"]),
    ([Layer(select=["KV101"], ignore=["KV1"])], ["KV101"]),  # more specific wins
    ([Layer(select=["KV101"], ignore=["KV101"])], []),  # a tie goes to ignore
    ([Layer(ignore=["KV2", "KV000"])], ["KV101", "KV102", "KV401"]),
    ([Layer(select=["KV1"]), Layer(extend_select=["KV401"])], ["KV101", "KV102", "KV401"]),
    ([Layer(ignore=["KV1"]), Layer(select=["KV101"])], ["KV101"]),  # a later select starts over
    ([Layer(ignore=["KV1"]), Layer(extend_select=["KV102"])], ["KV000", "KV102", "KV201", "KV202", "KV401"]),
    ([Layer(select=["KV"]), Layer(ignore=["KV0"])], ["KV101", "KV102", "KV201", "KV202", "KV401"]),
])
def test_resolve(layers: list[Layer], expected: list[str]) -> None:
    assert sorted(resolve(CODES, layers)) == expected


def test_check_selectors() -> None:
    check_selectors(["KV", "KV1", "KV10", "KV101", "KV000"], CODES, "x")
    with pytest.raises(LintConfigError, match="'E501' is not a rule code"):
        check_selectors(["E501"], CODES, "x")
    with pytest.raises(LintConfigError, match="no rule has the code KV199; known codes: KV000, KV101"):
        check_selectors(["KV199"], CODES, "x")


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("*.txt", "a/b/c.txt", True),
    ("*.txt", "a/b/c.md", False),
    ("prompts/*.txt", "prompts/a.txt", True),
    ("prompts/*.txt", "prompts/x/a.txt", False),
    ("prompts/**/*.txt", "prompts/x/y/a.txt", True),
    ("prompts/**/*.txt", "prompts/a.txt", True),
    ("legacy/**", "legacy/a/b.j2", True),
    ("legacy", "legacy/a/b.j2", True),  # a folder covers what is inside
    ("drafts/", "x/drafts/a.txt", True),
    ("drafts/", "x/drafts.txt", False),
    ("a?.md", "a1.md", True),
])
def test_path_matches(tmp_path: Path, pattern: str, path: str, matches: bool) -> None:
    assert path_matches(str(tmp_path / path), pattern, tmp_path) is matches


def test_glob_regex_escapes() -> None:
    assert glob_regex("a+b.txt").match("a+b.txt") and not glob_regex("a+b.txt").match("aab.txt")


def test_ignored_for(tmp_path: Path) -> None:
    cfg = LintConfig(root=tmp_path, per_file_ignores=[("*.j2", ["KV1"]), ("legacy/**", ["KV201", "KV202"])])
    assert ignored_for(str(tmp_path / "legacy" / "x.j2"), cfg) == {"KV1", "KV201", "KV202"}
    assert ignored_for(str(tmp_path / "x.txt"), cfg) == set()


def test_find_and_load_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.kvcache.lint]\nselect = ["KV1", "KV2"]\nignore = "KV102"\nextend-select = ["KV401"]\n'
        'provider = "anthropic"\nmodel = "claude-sonnet-4-5"\nexclude = ["build/"]\n'
        '[tool.kvcache.lint.per-file-ignores]\n"tests/**" = ["KV1"]\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    found = find_pyproject(deep)
    assert found == tmp_path / "pyproject.toml"
    cfg = load_config(found)
    assert cfg.root == tmp_path and cfg.layer == Layer(select=["KV1", "KV2"], extend_select=["KV401"], ignore=["KV102"])
    assert (cfg.provider, cfg.model, cfg.exclude) == ("anthropic", "claude-sonnet-4-5", ["build/"])
    assert cfg.per_file_ignores == [("tests/**", ["KV1"])]


def test_load_config_without_table(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_text("[project]\nname = 'x'\n")
    cfg = load_config(p)
    assert cfg.layer == Layer() and cfg.root == tmp_path
    assert load_config(None).path is None


@pytest.mark.parametrize(("text", "message"), [
    ("[tool.kvcache.lint]\nselect = [\n", r"pyproject\.toml:2: invalid TOML"),
    ("x = 1\ny = \n", r"pyproject\.toml:2: invalid TOML"),
    ("\n\n[tool.kvcache.lint]\nselct = []\n", r"pyproject\.toml:3: \[tool\.kvcache\.lint\]: unknown key\(s\) selct"),
    ("[tool.kvcache.lint]\nignore = [1]\n", "ignore must be a list of strings"),
    ("[tool.kvcache.lint]\nper-file-ignores = 3\n", "per-file-ignores must be a table"),
    ("[tool.kvcache.lint]\nmodel = 3\n", "model must be a string"),
    ("[tool.kvcache.lint]\nprovider = 'acme'\n", "provider 'acme': expected one of anthropic, openai"),
])
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_text(text)
    with pytest.raises(LintConfigError, match=message):
        load_config(p)


def test_config_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(LintConfigError, match="not valid UTF-8"):
        load_config(p)
