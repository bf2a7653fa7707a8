"""Which rules run where: ``[tool.kvcache.lint]`` in pyproject.toml and the command line.

Selection works as in ruff. Each *layer* (the config file, then the command
line) may set ``select`` (start over from these prefixes), ``extend-select``
(add) and ``ignore`` (remove). Within a layer the most specific prefix that
matches a code wins (``select = ["KV1"]``, ``ignore = ["KV101"]`` runs every
KV1xx rule but KV101; ``select = ["KV101"]``, ``ignore = ["KV1"]`` runs KV101),
and an ``ignore`` wins a tie. A later layer overrides an earlier one.

``per-file-ignores`` maps globs to codes switched off for matching files.
A glob without ``/`` matches the file name; one with ``/`` matches the path
relative to the folder holding pyproject.toml. ``**/`` matches any number of
folders and ``*`` stays within one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvcache.engine.errors import KVCacheError

SELECTOR_RE = re.compile(r"^KV\d{0,3}$")
PROVIDERS: tuple[str, ...] = ("anthropic", "openai", "gemini", "deepseek")
_KEYS = ("select", "ignore", "extend-select", "per-file-ignores", "exclude", "provider", "model")


class LintConfigError(KVCacheError):
    """A bad ``[tool.kvcache.lint]`` table or selector (exit 2: bad input)."""


@dataclass(slots=True)
class Layer:
    """One source of selection settings (``None`` where the source is silent)."""

    select: list[str] | None = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LintConfig:
    """``[tool.kvcache.lint]`` as read from one pyproject.toml.

    Attributes:
        path: the pyproject.toml it came from, or ``None`` (defaults).
        root: the folder relative globs are matched from (the file's folder, or
            the current folder).
    """

    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)
    layer: Layer = field(default_factory=Layer)
    per_file_ignores: list[tuple[str, list[str]]] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    provider: str | None = None
    model: str | None = None


def split_codes(values: Iterable[str] | None) -> list[str] | None:
    """``["KV1,KV2", "KV3"]`` -> ``["KV1", "KV2", "KV3"]`` (upper-cased; ``ALL`` is ``KV``)."""
    if values is None:
        return None
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip().upper()
            if part:
                out.append("KV" if part == "ALL" else part)
    return out


def check_selectors(codes: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise :class:`LintConfigError` for a selector that is not ``KV`` + up to three digits,
    or a full code that no rule has."""
    known = set(known)
    for c in codes:
        if not SELECTOR_RE.match(c):
            raise LintConfigError(f"{where}: {c!r} is not a rule code or prefix (expected e.g. KV1, KV101 or ALL)")
        if len(c) == 5 and c not in known:
            raise LintConfigError(f"{where}: no rule has the code {c}; known codes: {', '.join(sorted(known))}")


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml in ``start`` or a folder above it."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def nearest_config(paths: Iterable[str]) -> Path | None:
    """The pyproject.toml nearest the folder holding every path (stdin counts as the current folder)."""
    import os

    dirs = [p if os.path.isdir(p) else os.path.dirname(p) for p in (os.path.abspath(x) for x in paths if x != "-")]
    try:
        start = Path(os.path.commonpath(dirs)) if dirs else Path.cwd()
    except ValueError:  # paths on different drives
        start = Path.cwd()
    return find_pyproject(start)


def load_config(path: Path | None) -> LintConfig:
    """Read ``[tool.kvcache.lint]`` from ``path`` (defaults when ``None`` or absent).

    Raises:
        LintConfigError: the file is not TOML, or the table has an unknown key
            or a value of the wrong type (the message names the file and line).
    """
    if path is None:
        return LintConfig()
    import tomllib

    try:
        raw = path.read_bytes().decode("utf-8")
        data = tomllib.loads(raw)
    except OSError as e:
        raise LintConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise LintConfigError(f"{path}: not valid UTF-8 ({e.reason}); expected a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else raw.count("\n") + (not raw.endswith("\n"))  # "(at end of document)"
        message = re.sub(r"\s*\((at line \d+, column \d+|at end of document)\)", "", str(e))
        raise LintConfigError(f"{path}:{max(line, 1)}: invalid TOML ({message})") from None
    table = data.get("tool", {}).get("kvcache", {}).get("lint", {})
    cfg = LintConfig(path=path, root=path.parent)
    if not table:
        return cfg
    where = f"{path}:{_table_line(raw)}: [tool.kvcache.lint]"
    if not isinstance(table, dict):
        raise LintConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise LintConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_KEYS)}")
    cfg.layer = Layer(
        select=split_codes(_str_list(table, "select", where)) if "select" in table else None,
        extend_select=split_codes(_str_list(table, "extend-select", where)) or [],
        ignore=split_codes(_str_list(table, "ignore", where)) or [],
    )
    pfi = table.get("per-file-ignores", {})
    if not isinstance(pfi, dict):
        raise LintConfigError(f"{where} per-file-ignores must be a table of glob = [codes]")
    for glob, codes in pfi.items():
        cfg.per_file_ignores.append((glob, split_codes(_str_list(pfi, glob, f"{where} per-file-ignores")) or []))
    cfg.exclude = _str_list(table, "exclude", where) or []
    for key in ("provider", "model"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise LintConfigError(f"{where} {key} must be a string")
        setattr(cfg, key, value)
    if cfg.provider is not None and cfg.provider not in PROVIDERS:
        raise LintConfigError(f"{where} provider {cfg.provider!r}: expected one of {', '.join(PROVIDERS)}")
    return cfg


def _table_line(raw: str) -> int:
    m = re.search(r"^[ \t]*\[tool\.kvcache\.lint\]", raw, re.M)
    if m is None:
        m = re.search(r"^[ \t]*\[tool\.kvcache\]", raw, re.M)
    return raw.count("\n", 0, m.start()) + 1 if m else 1


def _str_list(table: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LintConfigError(f"{where} {key} must be a list of strings")
    return value


def resolve(codes: Iterable[str], layers: Iterable[Layer]) -> frozenset[str]:
    """The codes enabled after applying ``layers`` in order (see the module docstring)."""
    codes = list(codes)
    enabled = set(codes)
    for layer in layers:
        base = set() if layer.select is not None else enabled
        positives = [*(layer.select or []), *layer.extend_select]
        nxt = set(base)
        for code in codes:
            pos = max((len(p) for p in positives if code.startswith(p)), default=-1)
            neg = max((len(p) for p in layer.ignore if code.startswith(p)), default=-1)
            if neg >= 0 and neg >= pos:
                nxt.discard(code)
            elif pos >= 0:
                nxt.add(code)
        enabled = nxt
    return frozenset(enabled)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over ``/``-separated paths (see the module docstring)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_matches(path: str, pattern: str, root: Path) -> bool:
    """Whether ``path`` (as given) matches ``pattern`` (relative to ``root``).

    A pattern without ``/`` inside matches a file or folder name anywhere in the
    path below ``root`` (``drafts/`` only folders); one with ``/`` matches the
    path from ``root``, or a folder holding it.
    """
    p = Path(path)
    try:
        rel = p.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        rel = p
    if "/" not in pattern.rstrip("/"):
        rx = glob_regex(pattern.rstrip("/"))
        parts = rel.parts if not pattern.endswith("/") or path.endswith("/") else rel.parts[:-1]
        return any(rx.match(part) for part in parts)
    pattern = pattern.strip("/")
    text = rel.as_posix()
    return bool(glob_regex(pattern).match(text) or glob_regex(pattern + "/**").match(text))


def ignored_for(path: str, config: LintConfig) -> set[str]:
    """The codes ``per-file-ignores`` switch off for ``path`` (prefixes allowed)."""
    out: set[str] = set()
    for pattern, codes in config.per_file_ignores:
        if path_matches(path, pattern, config.root):
            out.update(codes)
    return out


def is_excluded(path: str, config: LintConfig) -> bool:
    return any(path_matches(path, pattern, config.root) for pattern in config.exclude)
