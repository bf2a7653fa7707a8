"""Lint many inputs: the library behind ``kvcache lint``.

:func:`lint_paths` discovers the inputs, reads each one, runs the rules
selected for its path, drops what ``kvcache: noqa`` suppresses (reporting
unused directives as ``KV000``) and, with ``fix``, applies safe fixes in
passes until none is left. A bad input becomes one :class:`LintInputError`
(``path:line: what was expected``) and the other inputs go on, so nothing is
lost. Writing fixes, output formats and exit codes are the CLI's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvcache.analyzers.lint import config as cfg
from kvcache.analyzers.lint.config import LintConfig, ignored_for
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.discover import Source, discover, read_source
from kvcache.analyzers.lint.fixes import fix_text
from kvcache.analyzers.lint.rule import LintContext, Rule, all_rules
from kvcache.analyzers.lint.runner import LintInputError, build_document, lint_trace

MAX_FIX_PASSES = 10


def rule_catalog() -> dict[str, type[Rule]]:
    """Every code a finding can carry: the rules, and the runner's own ``KV000``."""
    from kvcache.analyzers.lint.noqa import UNUSED_NOQA, UnusedNoqa

    return {UNUSED_NOQA: UnusedNoqa, **all_rules()}


@dataclass(slots=True)
class LintSettings:
    """What a run checks and how.

    Attributes:
        enabled: the codes selected for every file (see ``config.resolve``).
        config: per-file ignores and the folder their globs are relative to.
        ctx: provider and model for provider-aware rules.
        fix: apply safe fixes (in memory; writing them is the caller's choice).
        raise_rule_errors: let an exception inside a rule propagate (debugging)
            instead of reporting it as an error on that file.
    """

    enabled: frozenset[str]
    config: LintConfig = field(default_factory=LintConfig)
    ctx: LintContext = field(default_factory=LintContext)
    fix: bool = False
    raise_rule_errors: bool = False
    _rules: dict[str, Rule] = field(default_factory=dict, repr=False)

    def codes_for(self, path: str) -> frozenset[str]:
        """The enabled codes minus the ones ``per-file-ignores`` switch off for ``path``."""
        ignored = ignored_for(path, self.config) if self.config.per_file_ignores else ()
        if not ignored:
            return self.enabled
        return frozenset(c for c in self.enabled if not c.startswith(tuple(ignored)))

    def rules_for(self, path: str) -> list[Rule]:
        if not self._rules:
            self._rules = {code: cls() for code, cls in all_rules().items() if code in self.enabled}
        codes = self.codes_for(path)
        return [r for code, r in self._rules.items() if code in codes]


@dataclass(slots=True)
class FileResult:
    """The outcome for one input.

    Attributes:
        diagnostics: the findings left (after fixes, when fixing).
        source: the text as read (``None`` for traces).
        fixed: the text after fixes, when they changed it.
        applied: the findings whose fix was applied, in the order applied.
        bom: the file began with a UTF-8 byte-order mark (kept when writing).
    """

    path: str
    kind: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    source: str | None = None
    fixed: str | None = None
    applied: list[Diagnostic] = field(default_factory=list)
    bom: bool = False
    stdin: bool = False


@dataclass(slots=True)
class LintRun:
    """Every file's result and every input that could not be linted."""

    files: list[FileResult] = field(default_factory=list)
    errors: list[LintInputError] = field(default_factory=list)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        """All findings, most costly first."""
        return sorted((d for f in self.files for d in f.diagnostics), key=Diagnostic.sort_key)


def make_settings(
    paths: list[str], *, select: list[str] | None = None, extend_select: list[str] | None = None,
    ignore: list[str] | None = None, provider: str | None = None, model: str | None = None,
    config: str | None = "nearest", fix: bool = False, raise_rule_errors: bool = False,
) -> LintSettings:
    """Settings from the command line over ``[tool.kvcache.lint]``.

    ``config`` is a pyproject.toml path, ``"nearest"`` (the one nearest the
    folder holding ``paths``) or ``None`` (no config file). Selectors may be
    comma-separated. ``provider`` and ``model`` win over the file's.

    Raises:
        LintConfigError: a bad config file or selector (names the file and line).
    """
    catalog = rule_catalog()
    path = cfg.nearest_config(paths) if config == "nearest" else (None if config is None else Path(config))
    file = cfg.load_config(path)
    cli = cfg.Layer(select=cfg.split_codes(select) if select else None,
                    extend_select=cfg.split_codes(extend_select) or [], ignore=cfg.split_codes(ignore) or [])
    where = f"{file.path}: [tool.kvcache.lint]"
    for name, codes in (("select", file.layer.select or []), ("extend-select", file.layer.extend_select),
                        ("ignore", file.layer.ignore), *(("per-file-ignores", c) for _, c in file.per_file_ignores)):
        cfg.check_selectors(codes, catalog, f"{where} {name}")
    for name, codes in (("--select", cli.select or []), ("--extend-select", cli.extend_select), ("--ignore", cli.ignore)):
        cfg.check_selectors(codes, catalog, name)
    return LintSettings(
        enabled=cfg.resolve(catalog, [file.layer, cli]),
        config=file,
        ctx=LintContext(provider=provider or file.provider, model=model or file.model),
        fix=fix,
        raise_rule_errors=raise_rule_errors,
    )


def lint_paths(paths: list[str], settings: LintSettings, input_format: str | None = None,
               stdin_name: str = "-") -> LintRun:
    """Lint files and folders (``-`` is stdin); a bad input becomes an error and the rest go on."""
    from kvcache.analyzers.lint.tokens import install

    install()
    sources, errors = discover(paths, input_format, settings.config, stdin_name)
    run = LintRun(errors=errors)
    for src in sources:
        try:
            run.files.append(lint_one(src, settings))
        except LintInputError as e:
            run.errors.append(e)
    return run


def lint_one(src: Source, settings: LintSettings) -> FileResult:
    """Lint one discovered input.

    Raises:
        LintInputError: it cannot be read or parsed, or a rule failed on it.
    """
    if src.kind == "trace":
        return _lint_trace_source(src, settings)
    text, bom = read_source(src)
    result = FileResult(src.path, src.kind, source=text, bom=bom, stdin=src.stdin)
    diags = check_text(text, src.kind, src.path, settings)
    if settings.fix:
        current = text
        for _ in range(MAX_FIX_PASSES):
            new, used = fix_text(current, [d for d in diags if d.fix is not None])
            if new == current:
                break
            try:
                after = check_text(new, src.kind, src.path, settings)
            except LintInputError as e:
                codes = ", ".join(sorted({d.code for d in used}))
                raise LintInputError(src.path, None, f"the fix of {codes} would leave the file unparseable "
                                     f"({e.message}); nothing written (a bug in the rule, please report it)") from None
            result.applied.extend(used)
            current, diags = new, after
        if current != text:
            result.fixed = current
    result.diagnostics = diags
    return result


def check_text(text: str, kind: str, path: str, settings: LintSettings) -> list[Diagnostic]:
    """Findings in one document: the selected rules, then ``kvcache: noqa`` and ``KV000``."""
    from kvcache.analyzers.lint import noqa

    doc = build_document(text, kind, path, settings.ctx)
    codes = settings.codes_for(path)
    found: list[Diagnostic] = []
    for rule in settings.rules_for(path):
        if doc.kind not in rule.kinds:
            continue
        try:
            found.extend(rule.check(doc, settings.ctx))
        except Exception as e:  # noqa: BLE001 - a broken rule must not hide the other files' findings
            if settings.raise_rule_errors:
                raise
            raise LintInputError(path, None, f"internal error in rule {rule.code} ({type(e).__name__}: {e}); "
                                 "set KVCACHE_DEBUG=1 for a traceback") from None
    directives = noqa.directives(doc)
    kept = noqa.suppress(found, directives)
    if directives and noqa.UNUSED_NOQA in codes:
        kept.extend(noqa.unused(doc, directives, codes, rule_catalog()))
    kept.sort(key=Diagnostic.sort_key)
    return kept


def _lint_trace_source(src: Source, settings: LintSettings) -> FileResult:
    from kvcache.engine.errors import KVCacheError

    text = read_source(src)[0] if src.stdin else None
    rules = [r for r in settings.rules_for(src.path) if r.pairs]
    try:
        diags = lint_trace(src.path, rules, settings.ctx, text=text) if rules else []
    except KVCacheError as e:
        raise LintInputError(getattr(e, "path", src.path), getattr(e, "line", None),
                             getattr(e, "message", str(e))) from None
    if settings.config.per_file_ignores:  # a folder of logs reports findings in its files
        diags = [d for d in diags if d.code in settings.codes_for(d.path)]
    return FileResult(src.path, "trace", diagnostics=diags, stdin=src.stdin)
