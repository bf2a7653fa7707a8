"""Input kinds, folder walking and reading files as text (analyzers/lint/discover.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcache.analyzers.lint.discover import Source, discover, kind_of, read_source, write_source
from kvcache.analyzers.lint.runner import LintInputError


@pytest.mark.parametrize(("name", "kind"), [
    ("a.txt", "text"), ("a.MD", "text"), ("a.j2", "template"), ("a.jinja", "template"), ("a.prompt", "template"),
    ("a.json", "body"), ("a.py", "python"), ("a.jsonl", "trace"), ("a.jsonl.gz", "trace"), ("a.traj", "trace"),
    ("a.csv", None),
])
def test_kind_of(name: str, kind: str | None) -> None:
    assert kind_of(name) == kind


def test_gzip_other_than_jsonl_is_a_trace_only_when_named() -> None:
    assert kind_of("x.gz") == "trace" and kind_of("x.gz", in_folder=True) is None


def test_walk_skips_hidden_and_tool_folders_sorted(tmp_path: Path) -> None:
    for rel in ("b.txt", "a/z.j2", "a/y.json", ".git/x.txt", "venv/x.txt", "a/node_modules/x.txt",
                "a/__pycache__/x.py", "a/.hidden.txt", "a/notes.csv", "build/lib/x.py", "dist/x.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    sources, errors = discover([str(tmp_path)])
    assert errors == []
    rel = [(Path(s.path).relative_to(tmp_path).as_posix(), s.kind) for s in sources]
    assert rel == [("a/.hidden.txt", "text"), ("a/y.json", "body"), ("a/z.j2", "template"), ("b.txt", "text")]


def test_folder_as_trace_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    sources, _ = discover([str(tmp_path), str(tmp_path / "a.txt")])
    assert len(sources) == 1
    sources, _ = discover([str(tmp_path)], input_format="trace")
    assert sources == [Source(str(tmp_path), "trace")]


def test_read_source_bom_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_bytes("\ufeffhi\r\n".encode())
    assert read_source(Source(str(p), "text")) == ("hi\r\n", True)
    p.write_bytes(b"a\nb\nc\x00")
    with pytest.raises(LintInputError, match=r"a\.txt:3: binary file \(NUL byte at byte 5\)"):
        read_source(Source(str(p), "text"))
    p.write_bytes(b"a\n\xc3(")
    with pytest.raises(LintInputError, match=r"a\.txt:2: not valid UTF-8"):
        read_source(Source(str(p), "text"))


def test_write_source_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text("old")
    p.chmod(0o640)
    write_source(str(p), "new\r\n", bom=True)
    assert p.read_bytes() == "\ufeffnew\r\n".encode() and (p.stat().st_mode & 0o777) == 0o640
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]
