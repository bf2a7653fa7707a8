"""The one error table of the CLI.

| What happened                         | Printed                          | Exit |
|---------------------------------------|----------------------------------|------|
| bad option or argument (click)        | click's usage message            | 2    |
| ``UsageError`` raised by a command    | ``kvcache: usage error: ...``    | 2    |
| ``KVCacheError`` (bad trace, config)  | ``kvcache: error: ...``          | 1    |
| any other exception (a bug)           | ``kvcache: internal error: ...`` | 1    |
| Ctrl-C                                | ``kvcache: interrupted``         | 130  |

A traceback is printed only when ``KVCACHE_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """Options that parse but do not make sense together (exit 2)."""


def debug_enabled() -> bool:
    return os.environ.get("KVCACHE_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int) -> typer.Exit:
    print(f"kvcache: {message}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Wrap a command so that errors follow the table above."""
    from kvcache.engine.errors import KVCacheError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as e:
            if debug_enabled():
                raise
            raise _fail(f"usage error: {e}", 2) from None
        except KVCacheError as e:
            if debug_enabled():
                raise
            raise _fail(f"error: {e}", 1) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except BrokenPipeError:
            # Output piped into `head`: not an error worth a message.
            sys.stderr.close()
            raise typer.Exit(0) from None
        except Exception as e:  # noqa: BLE001 - the last row of the table
            if debug_enabled():
                raise
            raise _fail(
                f"internal error: {type(e).__name__}: {e} (set KVCACHE_DEBUG=1 for a traceback)", 1
            ) from None

    return wrapper  # type: ignore[return-value]
