"""Fixtures shared by the engine tests."""

from __future__ import annotations

import os

import pytest

IMPLEMENTATIONS = ("python", "c")


def pure_python_forced() -> bool:
    """Whether KVCACHE_PURE_PYTHON asks for the pure-Python path (as engine/replay.py reads it)."""
    return os.environ.get("KVCACHE_PURE_PYTHON", "") not in ("", "0")


def c_expected() -> bool:
    """Whether the C implementation should be tested (and must therefore be built)."""
    from kvcache.engine.replay import c_toolchain_present, load_accelerator

    return not pure_python_forced() and (load_accelerator() is not None or c_toolchain_present())


# Session scope: hypothesis tests may use it (it is a plain string, never mutated).
@pytest.fixture(scope="session", params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    """Each sequential-replay implementation in turn: ``python`` and ``c``.

    ``c`` is skipped when KVCACHE_PURE_PYTHON is set, or when the machine has no
    C toolchain (the install then falls back to pure Python by design). Otherwise a
    missing extension makes ``SequentialReplayer(..., implementation="c")`` raise,
    so a silently failed build fails these tests (and test_seqcache.py) loudly.
    """
    if request.param == "c" and not c_expected():
        pytest.skip("the C accelerator is disabled (KVCACHE_PURE_PYTHON) or this machine has no C toolchain")
    return request.param
