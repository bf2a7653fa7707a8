"""Fixtures shared by the engine tests."""

from __future__ import annotations

import os

import pytest

IMPLEMENTATIONS = ("python", "c")


def pure_python_forced() -> bool:
    """Whether KVCACHE_PURE_PYTHON asks for the pure-Python path (as engine/replay.py reads it)."""
    return os.environ.get("KVCACHE_PURE_PYTHON", "") not in ("", "0")


# Session scope: hypothesis tests may use it (it is a plain string, never mutated).
@pytest.fixture(scope="session", params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    """Each sequential-replay implementation in turn: ``python`` and ``c``.

    ``c`` is skipped only when KVCACHE_PURE_PYTHON is set. A missing extension
    otherwise makes ``SequentialReplayer(..., implementation="c")`` raise, so a
    silently failed build fails these tests (and test_seqcache.py) loudly.
    """
    if request.param == "c" and pure_python_forced():
        pytest.skip("KVCACHE_PURE_PYTHON is set: the C accelerator is disabled")
    return request.param
