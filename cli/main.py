"""The ``kvcache`` command. Commands are thin: parse, call the library, render.

Only typer is imported at start-up; each command imports what it needs when it
runs, so ``kvcache --help`` stays fast.
"""

from __future__ import annotations

import typer

from kvcache import __version__
from kvcache.cli.bench import bench
from kvcache.cli.lint import lint
from kvcache.cli.replay import replay
from kvcache.cli.rules import rules
from kvcache.cli.synth import synth

app = typer.Typer(
    name="kvcache",
    help=(
        "Why is my prompt-cache hit rate what it is? kvcache replays LLM traces through a "
        "vLLM-exact prefix-cache engine and reports block-level hit rates per request, session and org."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kvcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kvcache: profile and explain LLM prompt caching."""


app.command("replay", no_args_is_help=True)(replay)
app.command("synth")(synth)
app.command("lint", no_args_is_help=True)(lint)
app.command("rules")(rules)
app.command("bench")(bench)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="kvcache")


if __name__ == "__main__":
    main()
