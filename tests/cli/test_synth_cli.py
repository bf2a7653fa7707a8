"""`kvcache synth` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kvcache.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
SAMPLE_ARGS = ["--seed", "10", "--orgs", "3", "--users-per-org", "5", "--sessions-per-user", "3",
               "--min-turns", "3", "--max-turns", "6", "--system-words", "200-300", "--tools", "5-6"]


def test_reproduces_the_committed_samples(tmp_path: Path) -> None:
    native, hashed = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    r = runner.invoke(app, ["synth", *SAMPLE_ARGS, "-o", str(native)])
    assert r.exit_code == 0, r.output
    assert "wrote 215 requests" in r.stderr
    r = runner.invoke(app, ["synth", "--format", "hash-ids", *SAMPLE_ARGS, "-o", str(hashed)])
    assert r.exit_code == 0, r.output
    assert native.read_bytes() == (REPO / "sample_traces" / "agents.jsonl").read_bytes()
    assert hashed.read_bytes() == (REPO / "sample_traces" / "agents_hash_ids.jsonl").read_bytes()


def test_stdout_output_replays(tmp_path: Path) -> None:
    r = runner.invoke(app, ["synth", "--orgs", "1", "--users-per-org", "1", "--sessions-per-user", "2",
                            "--min-turns", "2", "--max-turns", "3", "--system-words", "60-80", "--tools", "2-3"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert 4 <= len(rows) <= 6 and all("messages" in row for row in rows)
    trace = tmp_path / "t.jsonl"
    trace.write_text(r.stdout)
    rep = runner.invoke(app, ["replay", str(trace), "-f", "json"])
    assert rep.exit_code == 0 and json.loads(rep.stdout)["summary"]["requests"] == len(rows)


def test_trace_block_size_sets_hash_id_granularity() -> None:
    r = runner.invoke(app, ["synth", "-f", "hash-ids", "--orgs", "1", "--users-per-org", "1",
                            "--sessions-per-user", "1", "--trace-block-size", "64"])
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        row = json.loads(line)
        assert len(row["hash_ids"]) == -(-row["input_length"] // 64)


def test_bad_options_are_usage_errors() -> None:
    for args in (["--tools", "5"], ["--system-words", "a-b"], ["--min-turns", "5", "--max-turns", "2"],
                 ["--trace-block-size", "64"], ["--breaker-rate", "2"]):
        r = runner.invoke(app, ["synth", *args])
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_unwritable_output_is_one_line_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["synth", "-o", str(tmp_path / "missing" / "t.jsonl")])
    assert r.exit_code == 1 and r.stderr.startswith("kvcache: error:") and "cannot write" in r.stderr
