"""Which files to lint, as what, and reading them as text.

A file's kind comes from its name (``--input-format`` overrides it for files
named on the command line and for stdin):

=================================  =========
``.txt`` ``.md`` ``.markdown``     text
``.j2`` ``.jinja`` ``.jinja2``     template
``.tmpl`` ``.prompt``              template
``.json``                          body
``.py``                            python
``.jsonl`` ``.jsonl.gz`` ``.traj`` trace
=================================  =========

A folder is walked recursively, in sorted order, skipping hidden folders,
``.venv``, ``venv``, ``node_modules``, ``__pycache__``, ``site-packages``,
``build`` and ``dist``, and files whose kind the name does not tell. A folder given with ``--input-format trace`` is one
trace instead (a folder of agent logs, as ``kvcache replay`` reads it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kvcache.analyzers.lint.config import LintConfig, is_excluded
from kvcache.analyzers.lint.runner import KIND_BY_SUFFIX, LintInputError

SKIP_DIRS = frozenset({".venv", "venv", "node_modules", "__pycache__", "site-packages", "build", "dist"})
SUFFIXES = ", ".join(sorted({*KIND_BY_SUFFIX, ".traj", ".jsonl.gz"} - {".gz"}))


@dataclass(slots=True, frozen=True)
class Source:
    """One input: ``path`` as shown in findings (``-`` or ``--stdin-filename`` for stdin)."""

    path: str
    kind: str
    stdin: bool = False


def kind_of(path: str, in_folder: bool = False) -> str | None:
    """The kind a file name implies; in a folder only ``.jsonl.gz`` of the gzip files counts."""
    name = path.lower()
    if name.endswith((".jsonl.gz", ".traj")):
        return "trace"
    if name.endswith(".gz"):
        return None if in_folder else "trace"  # kvcache replay reads any gzip trace
    return KIND_BY_SUFFIX.get(Path(name).suffix)


def discover(
    paths: list[str], input_format: str | None = None, config: LintConfig | None = None, stdin_name: str = "-"
) -> tuple[list[Source], list[LintInputError]]:
    """The inputs ``paths`` name, and one error per path that names nothing lintable."""
    config = config or LintConfig()
    sources: list[Source] = []
    errors: list[LintInputError] = []
    seen: set[str] = set()

    def add(src: Source) -> None:
        key = src.path if src.stdin else os.path.realpath(src.path)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    for arg in paths:
        if arg == "-":
            if input_format is None:
                errors.append(LintInputError(stdin_name, None, "stdin needs --input-format (text, template, body, python or trace)"))
            else:
                add(Source(stdin_name, input_format, stdin=True))
            continue
        p = Path(arg)
        if p.is_dir():
            if input_format == "trace":
                add(Source(arg, "trace"))
                continue
            for f in _walk(arg, config):
                kind = kind_of(f, in_folder=True)
                if kind is not None:
                    add(Source(f, kind))
        elif p.exists():
            kind = input_format or kind_of(arg)
            if kind is None:
                errors.append(LintInputError(arg, None, f"cannot tell the input kind from the name; expected one of {SUFFIXES}, or pass --input-format"))
            else:
                add(Source(arg, kind))
        else:
            errors.append(LintInputError(arg, None, "no such file or folder"))
    return sources, errors


def _walk(top: str, config: LintConfig) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not (config.exclude and is_excluded(os.path.join(folder, d) + "/", config)))
        for f in sorted(files):
            path = os.path.join(folder, f)
            if not (config.exclude and is_excluded(path, config)):
                out.append(path)
    return sorted(out)


def read_source(src: Source) -> tuple[str, bool]:
    """The text of a file (or stdin) and whether it began with a UTF-8 byte-order mark.

    Raises:
        LintInputError: unreadable, binary (a NUL byte) or not UTF-8; the line is
            where the first bad byte is.
    """
    if src.stdin:
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(src.path, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise LintInputError(src.path, None, f"cannot read ({e.strerror}); expected a readable file") from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise LintInputError(src.path, line, f"binary file (NUL byte at byte {nul}); expected UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LintInputError(src.path, line, f"not valid UTF-8 ({e.reason} at byte {e.start}); expected UTF-8 text") from None
    if text.startswith("\ufeff"):
        return text[1:], True
    return text, False


def write_source(path: str, text: str, bom: bool) -> None:
    """Write fixed text back as it was read (line endings kept, BOM restored), atomically.

    Raises:
        OSError: the file cannot be written (the original is left as it was).
    """
    data = (("\ufeff" if bom else "") + text).encode("utf-8")
    tmp = f"{path}.kvcache-fix.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except OSError:
            pass
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
