"""``kvcache lint``: find prompt edits that break prefix caching, before they ship."""

from __future__ import annotations

import os
import sys
from enum import Enum

import typer

from kvcache.cli.errors import UsageError, debug_enabled, handle_errors


class InputKind(str, Enum):
    text = "text"
    template = "template"
    body = "body"
    python = "python"
    trace = "trace"


class LintFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"


class Provider(str, Enum):
    anthropic = "anthropic"
    openai = "openai"
    gemini = "gemini"
    deepseek = "deepseek"


CODES_HELP = "Comma-separated codes or prefixes (KV1, KV101, ALL); repeatable."


@handle_errors
def lint(
    paths: list[str] = typer.Argument(..., metavar="PATH...", help="Files or folders to lint; - reads stdin (needs --input-format).", show_default=False),
    input_format: InputKind | None = typer.Option(None, "--input-format", help="Read every file named (and stdin) as this kind instead of going by its name; a folder with trace is one trace (agent logs)."),
    select: list[str] | None = typer.Option(None, "--select", help=f"Run only these rules. {CODES_HELP}"),
    extend_select: list[str] | None = typer.Option(None, "--extend-select", help=f"Run these rules as well. {CODES_HELP}"),
    ignore: list[str] | None = typer.Option(None, "--ignore", help=f"Do not run these rules. {CODES_HELP}"),
    provider: Provider | None = typer.Option(None, "--provider", help="Provider whose cache rules apply (provider-aware rules; default: each rule's own)."),
    model: str | None = typer.Option(None, "--model", help="Model name for provider-aware rules (a request body's own model field wins)."),
    output_format: LintFormat = typer.Option(LintFormat.text, "--format", "-f", help="text for people; json; sarif for GitHub code scanning; github for workflow annotations."),
    output: str | None = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the report to FILE instead of stdout."),
    fix: bool = typer.Option(False, "--fix", help="Apply safe fixes and write the files."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff of what --fix would change; write nothing (exit 1 if there are changes)."),
    show_fixes: bool = typer.Option(False, "--show-fixes", help="text: show each fixable finding's fix; with --fix, list the fixes applied."),
    statistics: bool = typer.Option(False, "--statistics", help="Count findings per rule instead of listing them (text or json)."),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when there are findings (bad inputs still exit 2)."),
    config: str | None = typer.Option(None, "--config", metavar="PYPROJECT", help="Read [tool.kvcache.lint] from this file instead of the nearest pyproject.toml."),
    isolated: bool = typer.Option(False, "--isolated", help="Ignore every pyproject.toml."),
    stdin_filename: str | None = typer.Option(None, "--stdin-filename", metavar="NAME", help="The path stdin is reported as (and matched against per-file-ignores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Findings only: no summary line and no warnings."),
) -> None:
    """Lint prompts, templates, request bodies, Python and traces for prefix-cache breakers.

    Each finding says how many prompt tokens after it can no longer be read
    from the cache. Exit 0 when clean, 1 with findings, 2 when an input or an
    option is bad (every other input is still linted and reported).
    See docs/lint.md and `kvcache rules`.
    """
    from pathlib import Path

    from kvcache.analyzers.lint.batch import lint_paths, make_settings
    from kvcache.analyzers.lint.config import LintConfigError

    fmt = output_format.value
    if statistics and fmt in ("sarif", "github"):
        raise UsageError(f"--statistics counts findings as text or json, not {fmt}")
    if diff and (statistics or fmt != "text" or output):
        raise UsageError("--diff prints a unified diff on stdout; drop --format, --output and --statistics")
    if fix and not diff and "-" in paths:
        raise UsageError("--fix cannot write back to stdin; use --diff to see the fix")
    if config and isolated:
        raise UsageError("--config and --isolated contradict each other")
    kind = input_format.value if input_format else None
    if kind not in (None, "trace"):
        folders = [p for p in paths if p != "-" and Path(p).is_dir()]
        if folders:
            raise UsageError(f"--input-format {kind} applies to files and stdin, and {folders[0]} is a folder "
                             "(folders are walked by file type; --input-format trace reads a folder of agent logs)")

    try:
        settings = make_settings(
            paths, select=select, extend_select=extend_select, ignore=ignore,
            provider=provider.value if provider else None, model=model,
            config=None if isolated else (config or "nearest"), fix=fix or diff, raise_rule_errors=debug_enabled(),
        )
    except LintConfigError as e:
        if debug_enabled():
            raise
        print(f"kvcache: error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    run = lint_paths(paths, settings, kind, stdin_name=stdin_filename or "-")
    warn = (lambda m: None) if quiet else (lambda m: print(f"kvcache: warning: {m}", file=sys.stderr))

    if diff:
        _print_diffs(run)
    else:
        fixed = _write_fixes(run, warn, show_fixes) if fix else 0
        _report(run, fmt, output, quiet=quiet, show_fixes=show_fixes, statistics=statistics, fixed=fixed, fix_mode=fix)
    for e in run.errors:
        print(f"kvcache: error: {e}", file=sys.stderr)
    if run.errors:
        raise typer.Exit(2)
    failing = any(f.fixed is not None for f in run.files) if diff else bool(run.diagnostics)
    if failing and not exit_zero:
        raise typer.Exit(1)


def _print_diffs(run) -> None:
    from kvcache.analyzers.lint.fixes import changes_prompt, unified_diff

    n = 0
    prompt = False
    for f in sorted(run.files, key=lambda f: f.path):
        if f.fixed is None:
            continue
        sys.stdout.write(unified_diff(f.path, f.source or "", f.fixed))
        n += len(f.applied)
        prompt = prompt or changes_prompt(f.applied)
    if n:
        extra = "; applying them changes prompt bytes, so the next request writes a new cache entry" if prompt else ""
        print(f"Would fix {n} finding{'s' * (n != 1)}{extra}.", file=sys.stderr)
    else:
        print("No fixes available.", file=sys.stderr)


def _write_fixes(run, warn, show_fixes: bool) -> int:
    from kvcache.analyzers.lint.discover import write_source
    from kvcache.analyzers.lint.runner import LintInputError

    n = 0
    for f in run.files:
        if f.fixed is None:
            continue
        try:
            write_source(f.path, f.fixed, f.bom)
        except OSError as e:
            run.errors.append(LintInputError(f.path, None, f"cannot write the fixed file ({e.strerror})"))
            continue
        n += len(f.applied)
        for d in f.applied:
            if show_fixes:
                print(f"fixed {d.path}:{d.line}:{d.col}: {d.code} {d.fix.message}", file=sys.stderr)
            if d.fix.changes_prompt:
                warn(f"{d.path}:{d.line}: fixed {d.code} ({d.fix.message}); the prompt bytes changed, "
                     "so the next request writes a new cache entry")
    return n


def _report(run, fmt: str, output: str | None, *, quiet: bool, show_fixes: bool, statistics: bool, fixed: int,
            fix_mode: bool) -> None:
    import json

    from kvcache import __version__
    from kvcache.analyzers.lint import formats
    from kvcache.analyzers.lint.batch import rule_catalog

    diags = run.diagnostics
    if statistics:
        rows = formats.statistics(diags)
        body = json.dumps(rows, indent=2) + "\n" if fmt == "json" else formats.statistics_text(rows)
    elif fmt == "json":
        body = formats.to_json(diags)
    elif fmt == "sarif":
        body = formats.sarif(diags, rule_catalog(), version=__version__, errors=run.errors)
    elif fmt == "github":
        body = formats.github(diags)
    else:
        color = output is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        body = formats.text(diags, color=color, show_fixes=show_fixes)
    if fmt == "text" and not quiet:
        body += ("\n" if body else "") + formats.summary(diags, files=len(run.files), fixed=fixed, fix_mode=fix_mode,
                                                              errors=len(run.errors)) + "\n"
    if output is None:
        sys.stdout.write(body)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(body)
    except OSError as e:
        raise UsageError(f"--output {output}: cannot write ({e.strerror})") from None
