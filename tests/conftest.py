"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The models and kernels under test are tiny: with several OpenMP threads each
# small matmul costs more in thread hand-off than in arithmetic, and on a busy
# 2-core machine spinning threads made the SmolLM2 test 30x slower. Set before
# any test imports torch; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces"


@pytest.fixture
def shared_traces() -> Path:
    """The real traces in ../shared/traces; skips the test when absent."""
    if not SHARED_TRACES.is_dir():
        pytest.skip("../shared/traces is not present")
    return SHARED_TRACES
