"""``kvcache synth``: write a deterministic synthetic trace."""

from __future__ import annotations

import typer

from kvcache.cli.errors import handle_errors


@handle_errors
def synth() -> None:
    """Generate a synthetic multi-user agent trace (not wired yet)."""
    raise typer.Exit(0)
