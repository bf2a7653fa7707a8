"""Figures on the real traces in ../shared/traces (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app


def test_mooncake_unbounded_figures(shared_traces: Path) -> None:
    trace = shared_traces / "mooncake_synthetic_trace.jsonl"
    if not trace.exists():
        pytest.skip("mooncake_synthetic_trace.jsonl is not present")
    r = CliRunner().invoke(app, ["replay", str(trace), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["requests"] == 3993
    assert s["block_size"] == 512 and s["input_format"] == "mooncake"
    assert s["block_hit_rate"] == pytest.approx(0.6396, abs=1e-4)
    assert s["token_hit_rate"] == pytest.approx(0.6512, abs=1e-4)


def test_mooncake_finite_capacity_never_beats_unbounded(shared_traces: Path) -> None:
    trace = shared_traces / "mooncake_synthetic_trace.jsonl"
    if not trace.exists():
        pytest.skip("mooncake_synthetic_trace.jsonl is not present")
    runner = CliRunner()
    unbounded = json.loads(runner.invoke(app, ["replay", str(trace), "-f", "json", "-q"]).stdout)["summary"]
    small = json.loads(runner.invoke(app, ["replay", str(trace), "-f", "json", "-q", "--kv-blocks", "2000"]).stdout)["summary"]
    assert small["hit_blocks"] < unbounded["hit_blocks"]
    assert small["evicted_blocks"] > 0


def test_claude_code_folder_predictions_match_the_bill(shared_traces: Path) -> None:
    # Issue 3's acceptance: the whole folder as one org (sessions and subagents in
    # time order), --provider anthropic, no hand-tuned flags.
    folder = shared_traces / "claude_code"
    if not folder.is_dir():
        pytest.skip("claude_code traces are not present")
    r = CliRunner().invoke(app, ["replay", str(folder), "--provider", "anthropic", "-f", "json", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["input_format"] == "claude-code" and s["skipped_lines"] == 0
    pvb = s["predicted_vs_billed"]
    assert pvb["calls"] == s["requests"] == 169
    assert pvb["per_call_abs_error_share"] <= 0.02
    assert abs(pvb["uncached_error"]) <= 0.25


def test_codex_rollouts_predictions_match_the_bill(shared_traces: Path) -> None:
    # Issue 3's acceptance: each rollout with more than 20 calls, --provider openai.
    files = sorted((shared_traces / "codex").glob("rollout-*.jsonl"))
    if not files:
        pytest.skip("codex traces are not present")
    checked = 0
    for f in files:
        r = CliRunner().invoke(app, ["replay", str(f), "--provider", "openai", "-f", "json", "-q"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)["summary"]
        assert s["input_format"] == "codex" and s["skipped_lines"] == 0
        pvb = s["predicted_vs_billed"]
        assert pvb["calls"] == s["requests"]
        if s["requests"] > 20:
            assert pvb["per_call_abs_error_share"] <= 0.03, f.name
            checked += 1
    assert checked == 3
