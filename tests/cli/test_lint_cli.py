"""`kvcache lint` and `kvcache rules` through typer's CliRunner.

Two test-only rules are registered for these tests and removed afterwards, so
the CLI is tested independently of which real rules exist:

* KV198 ``test-marker`` flags every ``NOW()`` in text, templates and Python
  (its message names the provider and model it was given);
* KV298 ``test-unsorted-tools`` flags a request body whose ``tools`` are not
  sorted by name, with a safe fix that sorts them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.analyzers.lint.diagnostic import Edit, Fix
from kvcache.analyzers.lint.rule import REGISTRY, Rule, all_rules, register
from kvcache.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


class MarkerRule(Rule):
    """Test-only: NOW() in a prompt.

    What it does:
    Flags ``NOW()``.

    Why is this bad?
    It changes on every request.

    Example:
        It is NOW().

    Use instead:
    Leave it out.

    References:
    - none
    """

    code = "KV198"
    name = "test-marker"
    kinds = frozenset({"text", "template", "python"})

    def check(self, doc, ctx):
        for m in re.finditer(r"NOW\(\)", doc.text):
            risk = None if doc.kind == "python" else "auto"
            yield self.diagnostic(doc, m.start(), m.end(), f"NOW() here (provider={ctx.provider}, model={doc.model})",
                                  tokens_at_risk=risk)


class UnsortedToolsRule(Rule):
    """Test-only: tools not sorted by name.

    What it does:
    Flags a body whose tools are out of order.

    Why is this bad?
    Reordered tools change the prefix.

    Example:
        {"tools": [{"name": "b"}, {"name": "a"}]}

    Use instead:
    Sort them by name.

    References:
    - none
    """

    code = "KV298"
    name = "test-unsorted-tools"
    severity = "error"
    kinds = frozenset({"body"})
    fixable = True

    def check(self, doc, ctx):
        tools = doc.body.get("tools") if isinstance(doc.body, dict) else None
        if not isinstance(tools, list):
            return
        names = [t.get("name", "") for t in tools]
        if names == sorted(names):
            return
        spans = [doc.span_of("tools", i) for i in range(len(tools))]
        texts = [doc.text[s:e] for s, e in spans]
        order = sorted(range(len(tools)), key=lambda i: names[i])
        edits = []
        for i, (s, e) in enumerate(spans):
            line, col = doc.position(s)
            end_line, end_col = doc.position(e)
            edits.append(Edit(line, col, end_line, end_col, texts[order[i]]))
        start, end = doc.span_of("tools")
        yield self.diagnostic(doc, start, end, "tools are not sorted by name",
                              fix=Fix("sort tools by name", tuple(edits)))


@pytest.fixture(autouse=True)
def test_rules() -> Iterator[None]:
    all_rules()  # import the real rules first
    added = []
    for cls in (MarkerRule, UnsortedToolsRule):
        if cls.code in REGISTRY:
            pytest.skip(f"{cls.code} is taken by a real rule; renumber the test rule")
        register(cls)
        added.append(cls.code)
    yield
    for code in added:
        REGISTRY.pop(code, None)


def lint(*args: str, input: str | None = None, cwd: Path | None = None):
    """Run `kvcache lint` with only the test rules and KV000 selected (unless --select is given)."""
    argv = ["lint", *args]
    if "--select" not in args and "--isolated" not in args and "--config" not in args:
        argv += ["--isolated"]
    if "--select" not in args:
        argv += ["--select", "KV198,KV298,KV000"]
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, argv, input=input)
    finally:
        os.chdir(old)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


UNSORTED = '{\n  "model": "claude-sonnet-4-5",\n  "tools": [\n    {"name": "search"},\n    {"name": "edit"},\n    {"name": "bash"}\n  ]\n}\n'
SORTED = '{\n  "model": "claude-sonnet-4-5",\n  "tools": [\n    {"name": "bash"},\n    {"name": "edit"},\n    {"name": "search"}\n  ]\n}\n'


# ------------------------------------------------------------------ exit codes and text
def test_clean_file_exits_0(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "You are helpful.\n")
    r = lint(str(p))
    assert r.exit_code == 0, r.output
    assert "All checks passed (1 file checked)." in r.stdout


def test_finding_text_format_exit_1(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "You are helpful.\nThe time is NOW(). Answer briefly and well.\n")
    r = lint(str(p))
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0] == f"{p}:2:13: KV198 NOW() here (provider=None, model=None)"
    assert lines[2] == " 2 | The time is NOW(). Answer briefly and well."
    caret = lines[3]
    assert caret.index("^") == lines[2].index("NOW()") and caret.count("^") == 5
    assert re.search(r"\d+ tokens at risk$", caret)
    assert lines[-1].startswith("Found 1 finding in 1 of 1 file;") and "prompt tokens at risk" in lines[-1]


def test_exit_zero_and_quiet(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "NOW()\n")
    r = lint(str(p), "--exit-zero", "--quiet")
    assert r.exit_code == 0
    assert "KV198" in r.stdout and "Found" not in r.stdout


def test_long_lines_are_cut_around_the_finding(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "x" * 500 + " NOW() " + "y" * 500 + "\n")
    r = lint(str(p))
    ctx, caret = r.stdout.splitlines()[2], r.stdout.splitlines()[3]
    assert len(ctx) < 130 and ctx.count("…") == 2
    assert caret.index("^") == ctx.index("NOW()")


def test_findings_are_ordered_by_tokens_at_risk(tmp_path: Path) -> None:
    short = write(tmp_path / "a.txt", "Intro. NOW()\n")
    long = write(tmp_path / "b.txt", "NOW() " + "many words follow here. " * 200 + "\n")
    py = write(tmp_path / "c.py", 'PROMPT = "NOW()"\n')
    r = lint(str(short), str(py), str(long), "-f", "json")
    rows = json.loads(r.stdout)
    assert [Path(d["path"]).name for d in rows] == ["b.txt", "a.txt", "c.py"]
    assert rows[0]["tokens_at_risk"] > rows[1]["tokens_at_risk"] > 0 and rows[2]["tokens_at_risk"] is None


# ------------------------------------------------------------------ formats
def test_json_format_fields(tmp_path: Path) -> None:
    p = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(p), "--format", "json")
    assert r.exit_code == 1
    (d,) = json.loads(r.stdout)
    assert set(d) >= {"code", "name", "message", "severity", "path", "line", "col", "end_line", "end_col",
                      "tokens_at_risk", "fix"}
    assert (d["code"], d["name"], d["severity"], d["line"], d["col"]) == ("KV298", "test-unsorted-tools", "error", 3, 12)
    assert d["fix"]["message"] == "sort tools by name" and d["fix"]["changes_prompt"] is True
    assert isinstance(d["tokens_at_risk"], int)


def test_github_format(tmp_path: Path) -> None:
    p = write(tmp_path / "p,1.txt", "a NOW()\n")
    b = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(p), str(b), "-f", "github")
    lines = r.stdout.splitlines()
    assert r.exit_code == 1 and len(lines) == 2
    warn = next(ln for ln in lines if "KV198" in ln)
    assert warn.startswith("::warning file=") and "p%2C1.txt" in warn
    assert ",line=1,col=3,endLine=1,endColumn=8,title=KV198::test-marker: NOW() here" in warn
    assert next(ln for ln in lines if "KV298" in ln).startswith("::error file=")


def test_output_file(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "NOW()\n")
    out = tmp_path / "report.json"
    r = lint(str(p), "-f", "json", "-o", str(out))
    assert r.exit_code == 1 and r.stdout == ""
    assert json.loads(out.read_text())[0]["code"] == "KV198"


def test_statistics(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "NOW() NOW()\n")
    b = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(p), str(b), "--statistics")
    assert r.exit_code == 1
    assert re.search(r"^2  KV198      test-marker  \(\d[\d,]* tokens at risk\)$", r.stdout, re.M)
    assert re.search(r"^1  KV298  \[\*\] test-unsorted-tools", r.stdout, re.M)
    rows = json.loads(lint(str(p), "--statistics", "-f", "json").stdout)
    assert rows[0]["code"] == "KV198" and rows[0]["count"] == 2
    assert lint(str(p), "--statistics", "-f", "sarif").exit_code == 2


def test_show_fixes(tmp_path: Path) -> None:
    b = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(b), "--show-fixes")
    assert "KV298 [*] tools are not sorted" in r.stdout and "= fix: sort tools by name" in r.stdout
    assert "1 fixable with --fix" in r.stdout


# ------------------------------------------------------------------ sarif
def check_sarif(log: dict) -> None:
    """The parts of the SARIF 2.1.0 schema GitHub code scanning relies on, checked by hand."""
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "kvcache" and isinstance(driver["version"], str)
    rules = driver["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    for r in rules:
        assert re.fullmatch(r"KV\d{3}", r["id"]) and isinstance(r["name"], str)
        for key in ("shortDescription", "fullDescription"):
            assert isinstance(r[key]["text"], str) and r[key]["text"]
        assert r["help"]["text"] and r["help"]["markdown"]
        assert r["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
        if "helpUri" in r:
            assert re.match(r"^[a-z][a-z0-9+.-]*:", r["helpUri"])  # an absolute URI
    assert run.get("columnKind") in (None, "utf16CodeUnits", "unicodeCodePoints")
    for res in run["results"]:
        assert res["ruleId"] in ids and rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in ("none", "note", "warning", "error")
        assert isinstance(res["message"]["text"], str) and res["message"]["text"]
        (loc,) = res["locations"]
        phys = loc["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        assert not uri.startswith("/") and "://" not in uri and "\\" not in uri
        region = phys["region"]
        for key in ("startLine", "startColumn", "endLine", "endColumn"):
            assert isinstance(region[key], int) and region[key] >= 1
        assert (region["endLine"], region["endColumn"]) >= (region["startLine"], region["startColumn"])
        fps = res["partialFingerprints"]
        assert fps and all(isinstance(k, str) and isinstance(v, str) for k, v in fps.items())
    for inv in run.get("invocations", []):
        assert isinstance(inv["executionSuccessful"], bool)


def test_sarif_is_valid_for_code_scanning(tmp_path: Path) -> None:
    write(tmp_path / "prompts" / "p.txt", "Hello.\nIt is NOW().\n")
    write(tmp_path / "t.json", UNSORTED)
    r = lint("prompts", "t.json", "-f", "sarif", cwd=tmp_path)
    assert r.exit_code == 1
    log = json.loads(r.stdout)
    check_sarif(log)
    results = log["runs"][0]["results"]
    assert {res["ruleId"] for res in results} == {"KV198", "KV298"}
    marker = next(res for res in results if res["ruleId"] == "KV198")
    assert marker["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "prompts/p.txt"
    assert marker["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 2, "startColumn": 7, "endLine": 2, "endColumn": 12, "snippet": {"text": "It is NOW()."}}
    assert marker["level"] == "warning" and next(res for res in results if res["ruleId"] == "KV298")["level"] == "error"


def test_sarif_fingerprint_survives_moved_lines(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "It is NOW().\n")
    fp1 = json.loads(lint("p.txt", "-f", "sarif", cwd=tmp_path).stdout)["runs"][0]["results"][0]["partialFingerprints"]
    p.write_text("New intro.\n\nMore.\n   It is   NOW().\n")
    res = json.loads(lint("p.txt", "-f", "sarif", cwd=tmp_path).stdout)["runs"][0]["results"][0]
    assert res["locations"][0]["physicalLocation"]["region"]["startLine"] == 4
    assert res["partialFingerprints"] == fp1


def test_sarif_reports_bad_inputs_as_notifications(tmp_path: Path) -> None:
    write(tmp_path / "bad.json", "{")
    r = lint("bad.json", "-f", "sarif", cwd=tmp_path)
    assert r.exit_code == 2
    inv = json.loads(r.stdout)["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False and "bad.json:1" in inv["toolExecutionNotifications"][0]["message"]["text"]


# ------------------------------------------------------------------ selection and config
def test_select_ignore_extend_select(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "NOW()\n")
    b = write(tmp_path / "t.json", UNSORTED)

    def codes(*args: str) -> set[str]:
        r = runner.invoke(app, ["lint", "--isolated", str(p), str(b), "-f", "json", *args])
        assert r.exit_code in (0, 1), r.output
        return {d["code"] for d in json.loads(r.stdout)}

    assert codes("--select", "KV198") == {"KV198"}
    assert "KV298" not in codes("--select", "KV1,KV2", "--ignore", "KV298")
    assert codes("--select", "KV198", "--extend-select", "KV298") == {"KV198", "KV298"}
    assert codes("--select", "KV198", "--select", "KV298") == {"KV198", "KV298"}  # repeatable
    assert codes("--select", "KV298", "--ignore", "KV298") == set()  # a tie: ignore wins
    assert codes("--select", "KV298", "--ignore", "KV2") == {"KV298"}  # the more specific selector wins
    assert codes("--select", "KV2", "--ignore", "KV298") == codes("--select", "KV2") - {"KV298"}
    assert codes("--select", "KV298", "--ignore", "KV") == {"KV298"}  # the more specific selector wins
    assert "KV198" in codes("--select", "ALL")


def test_bad_selectors_are_usage_errors(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "hi\n")
    for args in (["--select", "E501"], ["--ignore", "KV9999"], ["--extend-select", "KV197"]):
        r = runner.invoke(app, ["lint", "--isolated", str(p), *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.startswith("kvcache: error:") and "Traceback" not in r.output
    r = runner.invoke(app, ["lint", "--isolated", str(p), "--select", "KV197"])
    assert "no rule has the code KV197" in r.stderr and "KV198" in r.stderr


def pyproject(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "pyproject.toml", f"[project]\nname = 'x'\n\n[tool.kvcache.lint]\n{body}\n")


def test_config_select_per_file_ignores_and_cli_precedence(tmp_path: Path) -> None:
    pyproject(tmp_path, 'select = ["KV198", "KV298"]\nprovider = "openai"\nmodel = "gpt-4o"\n'
                        '[tool.kvcache.lint.per-file-ignores]\n"legacy/**" = ["KV198"]\n"*.j2" = ["KV1"]\n')
    write(tmp_path / "prompts" / "p.txt", "NOW()\n")
    write(tmp_path / "legacy" / "deep" / "old.txt", "NOW()\n")
    write(tmp_path / "prompts" / "t.j2", "NOW()\n")
    write(tmp_path / "t.json", UNSORTED)
    r = runner.invoke(app, ["lint", str(tmp_path), "-f", "json"])
    rows = json.loads(r.stdout)
    assert sorted((Path(d["path"]).name, d["code"]) for d in rows) == [("p.txt", "KV198"), ("t.json", "KV298")]
    marker = next(d for d in rows if d["code"] == "KV198")
    assert "provider=openai, model=gpt-4o" in marker["message"]
    # command-line flags win over the file
    r = runner.invoke(app, ["lint", str(tmp_path), "-f", "json", "--select", "KV298", "--provider", "anthropic"])
    assert {d["code"] for d in json.loads(r.stdout)} == {"KV298"}
    r = runner.invoke(app, ["lint", str(tmp_path / "prompts" / "p.txt"), "-f", "json", "--provider", "anthropic", "--model", "m1"])
    assert "provider=anthropic, model=m1" in json.loads(r.stdout)[0]["message"]
    # --isolated ignores the file; --config names another one
    r = runner.invoke(app, ["lint", str(tmp_path / "legacy"), "-f", "json", "--isolated", "--select", "KV198"])
    assert len(json.loads(r.stdout)) == 1
    other = write(tmp_path / "other" / "pyproject.toml", '[tool.kvcache.lint]\nignore = ["KV198"]\n')
    r = runner.invoke(app, ["lint", str(tmp_path / "prompts" / "p.txt"), "--config", str(other), "--select", "KV198"])
    assert r.exit_code == 1  # the command line's select is a later layer than the file's ignore


def test_config_ignore_extend_select(tmp_path: Path) -> None:
    pyproject(tmp_path, 'ignore = ["KV198"]\nextend-select = ["KV298"]')
    write(tmp_path / "p.txt", "NOW()\n")
    r = runner.invoke(app, ["lint", str(tmp_path / "p.txt"), "-f", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = runner.invoke(app, ["lint", str(tmp_path / "p.txt"), "-f", "json", "--extend-select", "KV198"])
    assert r.exit_code == 1  # the command line adds it back


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write(tmp_path / "p.txt", "hi\n")
    cases = {
        "select = [\n": "invalid TOML",
        "colour = 1": "unknown key(s) colour",
        "select = 3": "select must be a list of strings",
        'select = ["X1"]': "'X1' is not a rule code or prefix",
        'provider = "acme"': "provider 'acme'",
        '[tool.kvcache.lint.per-file-ignores]\n"*.txt" = ["KV777"]': "no rule has the code KV777",
    }
    for body, expected in cases.items():
        pyproject(tmp_path, body)
        r = runner.invoke(app, ["lint", str(tmp_path / "p.txt")])
        assert r.exit_code == 2, (body, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr, r.stderr
        assert str(tmp_path / "pyproject.toml") in r.stderr
    pyproject(tmp_path, "select = [\n")
    assert re.search(r"pyproject\.toml:\d+: invalid TOML", runner.invoke(app, ["lint", str(tmp_path / "p.txt")]).stderr)


# ------------------------------------------------------------------ noqa
def test_noqa_in_text_markdown_templates_and_python(tmp_path: Path) -> None:
    write(tmp_path / "a.md", "It is NOW(). <!-- kvcache: noqa: KV198 -->\nNOW() kvcache: noqa\nNOW()\n")
    write(tmp_path / "b.j2", "{{ x }} NOW() {# kvcache: noqa: KV101, KV198 #}\n")
    write(tmp_path / "c.py", 'P = "NOW()"  # kvcache: noqa: KV198\nQ = "kvcache: noqa NOW()"\n')
    rows = json.loads(lint(str(tmp_path), "-f", "json").stdout)
    # the only finding left: line 3 of a.md and the marker inside a Python string, which is not a comment
    assert sorted((Path(d["path"]).name, d["line"], d["code"]) for d in rows) == [("a.md", 3, "KV198"), ("c.py", 2, "KV198")]


def test_unused_noqa_is_kv000(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "clean <!-- kvcache: noqa -->\nNOW() kvcache: noqa: KV198, KV298\n"
                                   "x kvcache: noqa: KV555\ny kvcache: noqa: please\n")
    rows = json.loads(lint(str(p), "-f", "json").stdout)
    found = {d["line"]: d for d in rows}
    assert set(found) == {1, 2, 3, 4} and all(d["code"] == "KV000" and d["name"] == "unused-noqa" for d in rows)
    assert "nothing to suppress" in found[1]["message"] and (found[1]["col"], found[1]["end_col"]) == (12, 25)
    assert "unknown code(s): KV555" in found[3]["message"]
    assert "names no codes" in found[4]["message"]
    assert "unused (nothing to suppress): KV298" in found[2]["message"]  # KV198 was used
    rows = json.loads(lint(str(p), "-f", "json", "--select", "KV198,KV000").stdout)
    assert {d["line"] for d in rows} == {1, 3, 4}  # KV298 not selected: not reported as unused
    rows = json.loads(lint(str(p), "-f", "json", "--select", "KV198").stdout)
    assert rows == []  # KV000 not selected


def test_unused_noqa_names_the_stale_code(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "NOW() kvcache: noqa: KV198, KV298\n")
    (d,) = json.loads(lint(str(p), "-f", "json").stdout)
    assert d["code"] == "KV000" and "unused (nothing to suppress): KV298" in d["message"]


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_each_one_line_and_the_rest_still_linted(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "NOW()\n")
    write(tmp_path / "body.json", '{\n  "model": "x",\n  "tools": [,]\n}\n')
    write(tmp_path / "front.md", "---\ntitle: [unclosed\nkey: 1\n---\nNOW()\n")
    write(tmp_path / "bin.txt", b"abc\n\x00\x01\x02")
    write(tmp_path / "latin.txt", b"ok\nna\xefve\n")
    write(tmp_path / "mod.py", "def f(:\n")
    write(tmp_path / "data.csv", "a,b\n")
    names = ["good.txt", "body.json", "front.md", "bin.txt", "latin.txt", "mod.py", "data.csv", "missing.txt"]
    r = lint(*names, cwd=tmp_path)
    assert r.exit_code == 2
    assert "good.txt:1:1: KV198" in r.stdout  # nothing lost
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 7, errors
    expected = [
        r"body\.json:3: not valid JSON .*expected one request body object",
        r"front\.md:\d: invalid YAML front matter",
        r"bin\.txt:2: binary file .*expected UTF-8 text",
        r"latin\.txt:2: not valid UTF-8 .*expected UTF-8 text",
        r"mod\.py:1: not valid Python",
        r"data\.csv: cannot tell the input kind",
        r"missing\.txt: no such file",
    ]
    for pattern in expected:
        assert any(re.search(r"^kvcache: error: " + pattern, e) for e in errors), (pattern, errors)
    assert "Traceback" not in r.output
    assert "7 inputs could not be linted" in r.stdout


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcache.analyzers.lint import discover

    p = write(tmp_path / "secret.txt", "hi\n")
    write(tmp_path / "ok.txt", "NOW()\n")
    real_open = open

    def fake_open(path, *a, **k):
        if str(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(discover, "open", fake_open, raising=False)
    r = lint(str(p), str(tmp_path / "ok.txt"))
    assert r.exit_code == 2
    assert f"kvcache: error: {p}: cannot read (Permission denied)" in r.stderr
    assert "ok.txt:1:1: KV198" in r.stdout


def test_rule_crash_is_one_line_unless_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "p.txt", "NOW()\n")
    q = write(tmp_path / "q.txt", "NOW()\n")

    def boom(self, doc, ctx):
        if doc.path.endswith("p.txt"):
            raise ValueError("kaboom")
        yield from ()

    monkeypatch.setattr(MarkerRule, "check", boom)
    r = lint(str(p), str(q))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "internal error in rule KV198 (ValueError: kaboom)" in r.stderr
    monkeypatch.setenv("KVCACHE_DEBUG", "1")
    r = lint(str(p))
    assert isinstance(r.exception, ValueError)


# ------------------------------------------------------------------ inputs
def test_stdin(tmp_path: Path) -> None:
    r = lint("-", "--input-format", "text", input="hello NOW()\n")
    assert r.exit_code == 1 and r.stdout.startswith("-:1:7: KV198")
    r = lint("-", "--input-format", "template", "--stdin-filename", "prompts/x.j2", input="NOW()\n")
    assert r.stdout.startswith("prompts/x.j2:1:1: KV198")
    r = lint("-", input="NOW()\n")
    assert r.exit_code == 2 and "stdin needs --input-format" in r.stderr
    r = lint("-", "--input-format", "body", "-f", "json", input=UNSORTED)
    assert json.loads(r.stdout)[0]["code"] == "KV298"


def test_input_format_overrides_the_suffix(tmp_path: Path) -> None:
    p = write(tmp_path / "prompt.data", "NOW()\n")
    assert lint(str(p)).exit_code == 2
    assert lint(str(p), "--input-format", "text").exit_code == 1
    r = lint(str(tmp_path), "--input-format", "text")
    assert r.exit_code == 2 and "is a folder" in r.stderr


def test_folder_discovery(tmp_path: Path) -> None:
    for rel in ("a.txt", "sub/b.md", "sub/deeper/c.j2", "sub/d.jinja", "e.py", "bodies/f.json",
                ".hidden/x.txt", ".venv/y.txt", "node_modules/z.txt", "__pycache__/w.txt", "sub/notes.csv", "img.png"):
        write(tmp_path / rel, UNSORTED if rel.endswith(".json") else 'X = "NOW()"\n' if rel.endswith(".py") else "NOW()\n")
    rows = json.loads(lint(str(tmp_path), "-f", "json").stdout)
    found = sorted(Path(d["path"]).relative_to(tmp_path).as_posix() for d in rows)
    assert found == ["a.txt", "bodies/f.json", "e.py", "sub/b.md", "sub/d.jinja", "sub/deeper/c.j2"]
    kinds = {Path(d["path"]).name: d["code"] for d in rows}
    assert kinds["f.json"] == "KV298"  # a .json in a folder is a request body


def test_config_exclude(tmp_path: Path) -> None:
    pyproject(tmp_path, 'exclude = ["drafts/", "*.md"]')
    write(tmp_path / "a.txt", "NOW()\n")
    write(tmp_path / "drafts" / "b.txt", "NOW()\n")
    write(tmp_path / "c.md", "NOW()\n")
    r = runner.invoke(app, ["lint", str(tmp_path), "-f", "json", "--select", "KV198"])
    assert [Path(d["path"]).name for d in json.loads(r.stdout)] == ["a.txt"]
    r = runner.invoke(app, ["lint", str(tmp_path / "c.md"), "-f", "json", "--select", "KV198"])
    assert len(json.loads(r.stdout)) == 1  # a file named explicitly is linted


def test_trace_inputs(tmp_path: Path) -> None:
    """Trace files go to the pair classifier; a folder is one trace only with --input-format trace."""
    trace = REPO / "sample_traces" / "agents.jsonl"
    r = runner.invoke(app, ["lint", "--isolated", str(trace), "-f", "json", "--select", "KV1,KV2,KV3,KV4,KV5"])
    if "classifier, which this build does not have yet" in r.stderr:
        pytest.skip("trace classification is not written yet")
    assert r.exit_code in (0, 1), r.output
    assert all(d["path"] == str(trace) for d in json.loads(r.stdout))
    bad = write(tmp_path / "bad.jsonl", '{"not": "a trace"\n')
    r = runner.invoke(app, ["lint", "--isolated", str(bad), "--select", "KV1,KV2,KV3,KV4,KV5"])
    assert r.exit_code == 2 and str(bad) in r.stderr and "Traceback" not in r.output


# ------------------------------------------------------------------ fixes
def test_fix_writes_sorted_tools_and_warns(tmp_path: Path) -> None:
    p = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(p), "--fix")
    assert r.exit_code == 0, r.output
    assert p.read_text() == SORTED
    assert "the prompt bytes changed, so the next request writes a new cache entry" in r.stderr
    assert "KV298" in r.stderr and "Found 1 finding (1 fixed, 0 remaining)" in r.stdout
    r = lint(str(p), "--fix")
    assert r.exit_code == 0 and "new cache entry" not in r.stderr


def test_fix_keeps_line_endings_and_bom(tmp_path: Path) -> None:
    raw = ("\ufeff" + UNSORTED.replace("\n", "\r\n")).encode()
    p = write(tmp_path / "t.json", raw)
    assert lint(str(p), "--fix", "-q").exit_code == 0
    assert p.read_bytes() == ("\ufeff" + SORTED.replace("\n", "\r\n")).encode()


def test_fix_reports_what_remains(tmp_path: Path) -> None:
    p = write(tmp_path / "t.json", UNSORTED)
    q = write(tmp_path / "p.txt", "NOW()\n")
    r = lint(str(p), str(q), "--fix", "--show-fixes")
    assert r.exit_code == 1
    assert "KV198" in r.stdout and "KV298" not in r.stdout
    assert "Found 2 findings (1 fixed, 1 remaining)" in r.stdout
    assert re.search(r"^fixed .*t\.json:3:12: KV298 sort tools by name$", r.stderr, re.M)
    r = lint(str(q), "--fix", "--quiet")
    assert r.stderr == ""


def test_diff_shows_without_writing(tmp_path: Path) -> None:
    p = write(tmp_path / "t.json", UNSORTED)
    r = lint(str(p), "--diff")
    assert r.exit_code == 1
    assert p.read_text() == UNSORTED
    assert r.stdout.startswith(f"--- {p}\n+++ {p}\n@@")
    assert '-    {"name": "search"},\n' in r.stdout and '+    {"name": "bash"},\n' in r.stdout
    assert "Would fix 1 finding; applying them changes prompt bytes" in r.stderr
    p.write_text(SORTED)
    r = lint(str(p), "--diff")
    assert r.exit_code == 0 and r.stdout == "" and "No fixes available" in r.stderr
    r = lint("-", "--input-format", "body", "--diff", input=UNSORTED)
    assert r.exit_code == 1 and r.stdout.startswith("--- -\n+++ -\n")


def test_fix_usage_errors(tmp_path: Path) -> None:
    p = write(tmp_path / "t.json", UNSORTED)
    assert lint("-", "--input-format", "body", "--fix", input=UNSORTED).exit_code == 2
    assert lint(str(p), "--diff", "-f", "json").exit_code == 2
    assert lint(str(p), "--config", "x.toml", "--isolated", "--select", "KV298").exit_code == 2


def test_real_kv201_fix_when_present(tmp_path: Path) -> None:
    """Once KV201 (tools sorted by name) exists, --fix sorts a body's tools with it."""
    if "KV201" not in all_rules() or not all_rules()["KV201"].fixable:
        pytest.skip("KV201 is not written yet")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                      for n in ("mcp__github__search", "mcp__fs__edit", "mcp__bash__run")]}
    p = write(tmp_path / "t.json", json.dumps(body, indent=2) + "\n")
    r = runner.invoke(app, ["lint", "--isolated", str(p), "--select", "KV201", "--fix"])
    assert r.exit_code == 0, r.output
    names = [t["function"]["name"] for t in json.loads(p.read_text())["tools"]]
    assert names == ["mcp__bash__run", "mcp__fs__edit", "mcp__github__search"] and "new cache entry" in r.stderr


# ------------------------------------------------------------------ kvcache rules
def test_rules_lists_everything() -> None:
    r = runner.invoke(app, ["rules"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for code in ("KV000", "KV198", "KV298", *all_rules()):
        assert code in r.stdout
    rows = json.loads(runner.invoke(app, ["rules", "-f", "json"]).stdout)
    by_code = {row["code"]: row for row in rows}
    assert by_code["KV298"]["fixable"] is True and by_code["KV298"]["kinds"] == ["body"]
    assert by_code["KV198"]["title"] == "Test-only: NOW() in a prompt."
    assert set(by_code["KV000"]) >= {"code", "name", "kinds", "fixable", "summary"}


def test_rules_one_rule() -> None:
    r = runner.invoke(app, ["rules", "KV198"], env={"COLUMNS": "120"})
    assert r.exit_code == 0
    for heading in ("What it does", "Why is this bad?", "Example", "Use instead", "References"):
        assert heading in r.stdout
    assert runner.invoke(app, ["rules", "test-marker"]).exit_code == 0
    assert runner.invoke(app, ["rules", "kv000"]).exit_code == 0
    d = json.loads(runner.invoke(app, ["rules", "KV298", "-f", "json"]).stdout)
    assert d["markdown"].startswith("# KV298 test-unsorted-tools")


def test_rules_unknown_code() -> None:
    r = runner.invoke(app, ["rules", "KV999"])
    assert r.exit_code == 2
    assert "no rule 'KV999'" in r.stderr and "KV000" in r.stderr and "KV198" in r.stderr


def test_lint_help_lists_every_option() -> None:
    r = runner.invoke(app, ["lint", "--help"], env={"COLUMNS": "200"})
    for opt in ("--input-format", "--select", "--extend-select", "--ignore", "--provider", "--model", "--format",
                "--output", "--fix", "--diff", "--show-fixes", "--statistics", "--exit-zero", "--config",
                "--isolated", "--stdin-filename", "--quiet"):
        assert opt in r.stdout, opt


# ------------------------------------------------------------------ start-up cost
def test_lint_does_not_import_heavy_packages(tmp_path: Path) -> None:
    p = write(tmp_path / "p.md", "---\ntitle: x\n---\nThe time is 14:32:05. Be brief.\n")
    b = write(tmp_path / "b.json", UNSORTED)
    code = (
        "import sys\n"
        "from kvcache.cli.main import app\n"
        f"sys.argv = ['kvcache', 'lint', '--isolated', {str(p)!r}, {str(b)!r}]\n"
        "try:\n    app(prog_name='kvcache')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'pandas', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in r.stderr, r.stderr
    assert "Found" in r.stdout or "All checks passed" in r.stdout
