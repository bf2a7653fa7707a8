"""``kvcache rules``: list the lint rules, or print one rule's docs.

``python -m kvcache.cli.rules --markdown > docs/rules.md`` regenerates the
rules reference from the registry (a test checks the committed file is current).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

import typer

from kvcache.cli.errors import UsageError, handle_errors


class RulesFormat(str, Enum):
    table = "table"
    json = "json"


@handle_errors
def rules(
    code: str | None = typer.Argument(None, metavar="[CODE]", help="A rule code (KV101) or name to print its docs.", show_default=False),
    output_format: RulesFormat = typer.Option(RulesFormat.table, "--format", "-f", help="table (or Markdown for one rule) for people, json for machines."),
) -> None:
    """List the lint rules (code, name, inputs checked, fixable, summary), or document one."""
    from kvcache.analyzers.lint.batch import rule_catalog

    catalog = rule_catalog()
    if code is None:
        rows = [rule_info(cls) for cls in catalog.values()]
        if output_format is RulesFormat.json:
            print(json.dumps(rows, indent=2))
            return
        _table(rows)
        return
    cls = find_rule(code, catalog)
    if output_format is RulesFormat.json:
        print(json.dumps(rule_info(cls, docs=True), indent=2))
        return
    from rich.console import Console
    from rich.markdown import Markdown

    from kvcache.analyzers.lint.formats import rule_markdown

    Console().print(Markdown(rule_markdown(cls)))


def find_rule(code: str, catalog: dict[str, Any]) -> Any:
    """The rule with this code or name (any case); a usage error listing the codes otherwise."""
    key = code.strip()
    for c, cls in catalog.items():
        if key.upper() == c or key.lower() == cls.name:
            return cls
    raise UsageError(f"no rule {code!r}; known codes: {', '.join(catalog)}")


def rule_info(cls: Any, docs: bool = False) -> dict[str, Any]:
    """What ``kvcache rules --format json`` reports about a rule."""
    from kvcache.analyzers.lint.formats import rule_title

    info = {
        "code": cls.code,
        "name": cls.name,
        "severity": cls.severity,
        "kinds": sorted(cls.kinds),
        "pairs": cls.pairs,
        "fixable": cls.fixable,
        "title": rule_title(cls),
        "summary": cls.summary(),
    }
    if docs:
        from kvcache.analyzers.lint.formats import rule_markdown

        info.update(why=cls.why(), instead=cls.instead(), markdown=rule_markdown(cls))
    return info


def _kinds(row: dict[str, Any]) -> str:
    return ", ".join(row["kinds"] + (["trace pairs"] if row["pairs"] else []))


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"kvcache lint rules ({len(rows)})")
    t.add_column("code", no_wrap=True)
    t.add_column("name", no_wrap=True)
    t.add_column("checks")
    t.add_column("fix", justify="center")
    t.add_column("summary")
    for r in rows:
        t.add_row(r["code"], r["name"], _kinds(r), "yes" if r["fixable"] else "", r["title"])
    Console().print(t)


def catalog_markdown(catalog: dict[str, Any] | None = None) -> str:
    """docs/rules.md: an index table, then every rule's docs under an ``#kv101`` anchor."""
    from kvcache.analyzers.lint.formats import rule_markdown
    from kvcache.analyzers.lint.rule import FAMILIES

    if catalog is None:
        from kvcache.analyzers.lint.batch import rule_catalog

        catalog = rule_catalog()
    out = [
        "# Lint rules",
        "",
        "<!-- Generated from the rule registry by `python -m kvcache.cli.rules --markdown > docs/rules.md`; do not edit. -->",
        "",
        "Every rule `kvcache lint` runs, from the registry (`kvcache rules` lists them, `kvcache rules KV101` prints one).",
        "Codes group by family: " + "; ".join(f"KV{d}xx {what}" for d, what in FAMILIES.items())
        + "; KV000 is the runner's own check of `kvcache: noqa` directives. [*] marks a rule with a safe fix (`--fix`).",
        "",
        "| Code | Name | Checks | Fix | Summary |",
        "|---|---|---|---|---|",
    ]
    for cls in catalog.values():
        r = rule_info(cls)
        summary = r["title"].replace("|", "\\|")
        out.append(f"| [{r['code']}](#{r['code'].lower()}) | {r['name']} | {_kinds(r)} | {'[*]' if r['fixable'] else ''} | {summary} |")
    for cls in catalog.values():
        out += ["", f'<a id="{cls.code.lower()}"></a>', "", rule_markdown(cls, level=2).rstrip("\n")]
    return "\n".join(out) + "\n"


def _main(argv: list[str]) -> int:
    if argv != ["--markdown"]:
        print("usage: python -m kvcache.cli.rules --markdown > docs/rules.md", file=sys.stderr)
        return 2
    sys.stdout.write(catalog_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
