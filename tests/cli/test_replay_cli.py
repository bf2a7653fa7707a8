"""`kvcache replay` through typer's CliRunner: JSON figures, files and the error table."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def two_turns(tmp_path: Path) -> Path:
    # Turn 1: a 40-token prompt and 25 recorded output tokens -> KV for 64 tokens.
    # Turn 2: prompt + outputs + 30 new tokens: hits floor(64/16)*16 = 64 tokens.
    prompt = list(range(40))
    outputs = list(range(1000, 1025))
    return write_jsonl(tmp_path / "t.jsonl", [
        {"request_id": "a", "session_id": "s", "org": "o", "arrival": 0,
         "prompt_token_ids": prompt, "output_token_ids": outputs},
        {"request_id": "b", "session_id": "s", "org": "o", "arrival": 1,
         "prompt_token_ids": prompt + outputs + list(range(2000, 2030))},
    ])


def replay_json(*args: str) -> dict:
    result = runner.invoke(app, ["replay", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_summary_exact_figures(tmp_path: Path) -> None:
    data = replay_json(str(two_turns(tmp_path)))
    s = data["summary"]
    assert (s["requests"], s["prompt_tokens"], s["cached_tokens"]) == (2, 40 + 95, 64)
    # Full prompt blocks: 40//16 = 2 and 95//16 = 5; leading hits 0 and 4.
    assert (s["blocks"], s["hit_blocks"]) == (7, 4)
    assert s["token_hit_rate"] == pytest.approx(64 / 135, abs=1e-6)
    assert s["block_hit_rate"] == pytest.approx(4 / 7, abs=1e-6)
    assert s["block_size"] == 16 and s["capacity_blocks"] is None
    assert s["evicted_blocks"] == 0 and s["skipped_lines"] == 0
    assert s["input_format"] == "token-ids"
    assert data["sessions"] == [{
        "session_id": "s", "org": "o", "requests": 2, "prompt_tokens": 135, "cached_tokens": 64,
        "token_hit_rate": round(64 / 135, 6), "blocks": 7, "hit_blocks": 4, "block_hit_rate": round(4 / 7, 6),
    }]
    assert [o["org"] for o in data["orgs"]] == ["o"]


def test_sha256_gives_identical_hits(tmp_path: Path) -> None:
    trace = str(two_turns(tmp_path))
    a = replay_json(trace)["summary"]
    b = replay_json(trace, "--hash", "sha256")["summary"]
    assert (a["cached_tokens"], a["hit_blocks"]) == (b["cached_tokens"], b["hit_blocks"])
    assert b["hash"] == "sha256"


def test_capacity_evicts(tmp_path: Path) -> None:
    # Four unrelated 64-token prompts into 5 usable blocks, then the first again:
    # it was evicted, so it misses; unbounded it would hit 48 tokens.
    rows = [{"request_id": str(i), "prompt_token_ids": [i * 100 + t for t in range(64)]} for i in range(4)]
    rows.append({"request_id": "again", "prompt_token_ids": [t for t in range(64)]})
    trace = str(write_jsonl(tmp_path / "c.jsonl", rows))
    unbounded = replay_json(trace)["summary"]
    small = replay_json(trace, "--kv-blocks", "6")["summary"]
    assert unbounded["cached_tokens"] == 48
    assert small["cached_tokens"] == 0
    assert small["capacity_blocks"] == 6 and small["usable_blocks"] == 5
    assert small["evicted_blocks"] > 0


def test_kv_memory_sizes_the_pool(tmp_path: Path) -> None:
    s = replay_json(str(two_turns(tmp_path)), "--kv-memory", "64MiB", "--model-shape", "llama-3.1-8b")["summary"]
    # llama-3.1-8b: 2 * 32 layers * 8 kv heads * 128 dims * 2 bytes * 16 tokens = 2 MiB per block.
    assert s["capacity_blocks"] == 32


def test_per_request_csv_and_jsonl(tmp_path: Path) -> None:
    trace = str(two_turns(tmp_path))
    out_csv = tmp_path / "rows.csv"
    out_jsonl = tmp_path / "rows.jsonl"
    assert runner.invoke(app, ["replay", trace, "-q", "--per-request", str(out_csv)]).exit_code == 0
    assert runner.invoke(app, ["replay", trace, "-q", "--per-request", str(out_jsonl)]).exit_code == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["request_id"], r["cached_tokens"], r["hit_blocks"], r["blocks"], r["first_miss_block"]) for r in rows] == [
        ("a", "0", "0", "2", "0"), ("b", "64", "4", "5", "4")]
    lines = [json.loads(x) for x in out_jsonl.read_text().splitlines()]
    assert lines[1]["cached_tokens"] == 64 and lines[1]["session_id"] == "s" and lines[0]["first_miss_block"] == 0


def test_per_request_bad_suffix_is_usage_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["replay", str(two_turns(tmp_path)), "--per-request", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and "must end in .csv or .jsonl" in r.stderr


def test_table_output_prints_definitions(tmp_path: Path) -> None:
    r = runner.invoke(app, ["replay", str(two_turns(tmp_path)), "--sequential"])
    assert r.exit_code == 0
    assert "token hit rate" in r.stdout and "cached prompt tokens / prompt tokens" in r.stdout
    assert "sequential replay" in r.stdout and "TTFT" not in r.stdout
    r = runner.invoke(app, ["replay", str(two_turns(tmp_path))])
    assert r.exit_code == 0
    assert "scheduled replay" in r.stdout and "TTFT p50/90/99" in r.stdout and "preemptions" in r.stdout


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt_token_ids": [1, 2, 3]}\n{"prompt_token_ids": [1, 2,\n', ":2: expected a JSON object"),
        ('{"prompt_token_ids": [1, 2, 3]}\n[1, 2]\n', ":2: expected a JSON object, got list"),
        ('{"prompt_token_ids": [1, 2, 3]}\n{"prompt_token_ids": "abc"}\n', ":2: expected 'prompt_token_ids' to be a list of integer token ids"),
        ('{"prompt_token_ids": [1, 2, -5]}\n', ":1: expected 'prompt_token_ids' to hold token ids between 0 and 4294967295"),
        ('{"prompt_token_ids": [1, 2, 4294967296]}\n', ":1: expected 'prompt_token_ids' to hold token ids between 0"),
        ('{"prompt_token_ids": [1], "arrival": NaN}\n', ":1: expected 'arrival' to be a finite number, got nan"),
        ('{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"function": "x"}]}]}\n',
         ":1: messages[0]: a tool call's 'function' must be an object"),
        ('{"messages": ' + '[' * 100000 + ']' * 100000 + '}\n', ":1: expected a JSON object (nested too deeply"),
        ('{"foo": 1}\n', ":1: unknown trace format (keys: foo); supported formats are claude-code"),
        ('{"hash_ids": [1, 2], "input_length": 5000}\n', ":1: input_length 5000 at 512 tokens per block needs 10 hash ids but the line has 2"),
        ('{"hash_ids": [1, 2, 3], "input_length": 600}\n', ":1: input_length 600 at 512 tokens per block needs 2 hash ids but the line has 3"),
        ('{"messages": [{"content": "hi"}]}\n', ":1: messages[0] needs a string 'role'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text(content)
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"kvcache: error: {trace}")
    assert expected in r.stderr
    assert "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_skip_invalid_skips_every_kind_of_bad_line(tmp_path: Path) -> None:
    trace = tmp_path / "mixed.jsonl"
    good = b'{"timestamp": 0, "input_length": 1000, "hash_ids": [1, 2]}\n'
    trace.write_bytes(
        good
        + b"\xff\xfe\n"  # not UTF-8
        + b'{"timestamp": 1, "input_length": 1000, "hash_ids": [1]}\n'  # too few ids
        + b'{"timestamp": 2, "input_length": 1000, "hash_ids": "x"}\n'  # wrong type
        + good.replace(b'"timestamp": 0', b'"timestamp": 3')
    )
    r = runner.invoke(app, ["replay", str(trace), "--skip-invalid", "-f", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["summary"]["requests"] == 2
    assert [s["line"] for s in data["skipped"]] == [2, 3, 4]
    assert "not valid UTF-8" in data["skipped"][0]["reason"]
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and ":2: not valid UTF-8" in r.stderr


def test_empty_org_is_no_org_and_bom_is_ignored(tmp_path: Path) -> None:
    trace = tmp_path / "bom.jsonl"
    trace.write_bytes(b"\xef\xbb\xbf" + b'{"org": "", "prompt_token_ids": [1, 2, 3]}\n{"prompt_token_ids": [1, 2, 3]}\n')
    data = replay_json(str(trace))
    assert [o["org"] for o in data["orgs"]] == [None]


def test_skip_invalid_counts_and_lists_lines(tmp_path: Path) -> None:
    trace = tmp_path / "mixed.jsonl"
    trace.write_text('{"prompt_token_ids": [1, 2, 3]}\nnot json\n{"prompt_token_ids": [1, 2, 3]}\n')
    r = runner.invoke(app, ["replay", str(trace), "--skip-invalid", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["summary"]["skipped_lines"] == 1 and data["summary"]["requests"] == 2
    assert data["skipped"][0]["line"] == 2
    assert "skipped 1 malformed line" in r.stderr


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: p.write_text(""), "the trace is empty"),
        (lambda p: p.write_text("\n\n"), "the trace is empty"),
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "unreadable gzip data"),
        (lambda p: None, "no such file"),
    ],
)
def test_whole_file_errors(tmp_path: Path, setup, expected: str) -> None:
    trace = tmp_path / ("t.jsonl.gz" if "gzip" in expected else "t.jsonl")
    setup(trace)
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and expected in r.stderr and "Traceback" not in r.output


def test_gzip_and_stdin(tmp_path: Path) -> None:
    plain = two_turns(tmp_path)
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a = replay_json(str(gz))["summary"]
    r = runner.invoke(app, ["replay", "-", "--format", "json"], input=plain.read_text())
    assert r.exit_code == 0, r.output
    b = json.loads(r.stdout)["summary"]
    assert a["cached_tokens"] == b["cached_tokens"] == 64


def test_arrivals_must_not_go_back_unless_sorted(tmp_path: Path) -> None:
    rows = [{"request_id": "late", "arrival": 5, "prompt_token_ids": list(range(40))},
            {"request_id": "early", "arrival": 1, "prompt_token_ids": list(range(40))}]
    trace = str(write_jsonl(tmp_path / "o.jsonl", rows))
    r = runner.invoke(app, ["replay", trace])
    assert r.exit_code == 1 and ":2: arrival 1 is earlier" in r.stderr and "--sort" in r.stderr
    s = replay_json(trace, "--sort")["summary"]
    assert s["requests"] == 2 and s["cached_tokens"] == 32


@pytest.mark.parametrize(
    "args",
    [
        ["--kv-memory", "80GiB"],
        ["--kv-memory", "lots", "--model-shape", "llama-3.1-8b"],
        ["--kv-memory", "80GiB", "--model-shape", "no-such-model"],
        ["--model-shape", "llama-3.1-8b", "--sequential"],
        ["--kv-blocks", "1"],
        ["--trace-block-size", "64"],
        ["--top", "-1"],
        ["--input-format", "klingon"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, ["replay", str(two_turns(tmp_path)), *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_block_size_does_not_apply_to_hash_id_traces(tmp_path: Path) -> None:
    trace = write_jsonl(tmp_path / "h.jsonl", [{"timestamp": 0, "input_length": 10, "hash_ids": [1]}])
    r = runner.invoke(app, ["replay", str(trace), "--block-size", "32"])
    assert r.exit_code == 2 and "--trace-block-size" in r.stderr


def test_debug_env_lets_the_exception_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text("nope\n")
    monkeypatch.setenv("KVCACHE_DEBUG", "1")
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1
    from kvcache.engine.errors import TraceError

    assert isinstance(r.exception, TraceError)


def test_version_and_help() -> None:
    from kvcache import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"kvcache {__version__}"
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "replay" in r.stdout and "synth" in r.stdout
    r = runner.invoke(app, ["replay", "--help"])
    assert r.exit_code == 0 and "arrival order" in r.stdout and "--kv-blocks" in r.stdout


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_closed_pipe_exits_quietly(tmp_path: Path, fmt: str) -> None:
    # `kvcache replay ... | head -1`: the reader goes away; no traceback, exit 0.
    # 1,600 sessions make the output far larger than a pipe buffer, so the write fails.
    import subprocess
    import sys

    trace = tmp_path / "big.jsonl"
    r = runner.invoke(app, ["synth", "-f", "hash-ids", "--orgs", "8", "--users-per-org", "50",
                            "--sessions-per-user", "4", "--max-turns", "3", "-o", str(trace)])
    assert r.exit_code == 0, r.output
    proc = subprocess.Popen([sys.executable, "-m", "kvcache", "replay", str(trace), "-f", fmt, "--top", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_predicted_against_billed(tmp_path: Path) -> None:
    # Two calls of one session, billed in the provider's units (twice our token count).
    # Call b: we predict 64 cached of 95 tokens; scaled per call by 190/95 that is 128
    # provider tokens, against 150 billed: |128 - 150| = 22.
    prompt = list(range(40))
    outputs = list(range(1000, 1025))
    rows = [
        {"request_id": "a", "session_id": "s", "prompt_token_ids": prompt, "output_token_ids": outputs,
         "usage": {"prompt_tokens": 80, "cached_tokens": 0}},
        {"request_id": "b", "session_id": "s", "prompt_token_ids": prompt + outputs + list(range(2000, 2030)),
         "usage": {"prompt_tokens": 190, "cached_tokens": 150}},
    ]
    trace = str(write_jsonl(tmp_path / "t.jsonl", rows))
    out = tmp_path / "rows.csv"
    data = replay_json(trace, "--per-request", str(out))
    s = data["summary"]
    assert (s["billed_prompt_tokens"], s["billed_cached_tokens"]) == (270, 150)
    assert s["billed_token_hit_rate"] == pytest.approx(150 / 270, abs=1e-6)
    pvb = s["predicted_vs_billed"]
    assert pvb["calls"] == 2 and pvb["calibration_ratio"] == pytest.approx(270 / 135, abs=1e-6)
    assert pvb["predicted_cached_tokens"] == 128
    assert pvb["per_call_abs_error_share"] == pytest.approx(22 / 270, abs=1e-6)
    # uncached: predicted 270 - 128 = 142, billed 270 - 150 = 120.
    assert pvb["uncached_error"] == pytest.approx((142 - 120) / 120, abs=1e-6)
    assert pvb["largest_disagreements"][0]["request_id"] == "b"
    rows_out = list(csv.DictReader(out.open()))
    assert [r["predicted_cached_billed_tokens"] for r in rows_out] == ["0", "128"]
    assert [r["billed_cached_tokens"] for r in rows_out] == ["0", "150"]
    table = runner.invoke(app, ["replay", trace])
    assert "billed hit rate" in table.stdout and "disagree most" in table.stdout


def test_no_usage_means_null_billed_fields(tmp_path: Path) -> None:
    s = replay_json(str(two_turns(tmp_path)))["summary"]
    assert s["billed_prompt_tokens"] is None and s["billed_token_hit_rate"] is None
    assert s["predicted_vs_billed"] is None


def test_bad_usage_is_reported(tmp_path: Path) -> None:
    trace = write_jsonl(tmp_path / "u.jsonl", [{"prompt_token_ids": [1, 2], "usage": {"prompt_tokens": 2, "cached_tokens": 5}}])
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and ":1: expected 'usage' to hold 'prompt_tokens' and 'cached_tokens'" in r.stderr


def test_provider_option(tmp_path: Path) -> None:
    trace = str(two_turns(tmp_path))
    s = replay_json(trace, "--provider", "deepseek")["summary"]
    # DeepSeek: 64-token units from token 0; turn 2 shares turn 1's 40-token prompt only
    # (outputs are cached once a prompt carries them): 32 tokens matched -> 0 billable.
    assert s["provider"] == "deepseek" and s["cached_tokens"] == 0
    assert s["notes"][0].startswith("provider deepseek")
    for args in (["--provider", "openai", "--kv-blocks", "10"], ["--provider-ttl", "1h"],
                 ["--provider", "anthropic", "--provider-ttl", "24h"]):
        r = runner.invoke(app, ["replay", trace, *args])
        assert r.exit_code == 2, (args, r.output)


def test_batch_output_pairs_billed_usage_by_custom_id(tmp_path: Path) -> None:
    system = {"role": "system", "content": "You are a terse assistant. " * 60}
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o", "messages": [system, {"role": "user", "content": f"question {i}"}]}}
             for i in range(3)]
    trace = write_jsonl(tmp_path / "batch_in.jsonl", lines)
    outputs = write_jsonl(tmp_path / "batch_out.jsonl", [
        {"custom_id": f"req-{i}", "response": {"status_code": 200, "body": {
            "usage": {"prompt_tokens": 400, "prompt_tokens_details": {"cached_tokens": 0 if i == 0 else 384}}}}}
        for i in range(3)])
    s = replay_json(str(trace), "--batch-output", str(outputs), "--provider", "openai")["summary"]
    assert s["input_format"] == "openai-chat"
    assert (s["billed_prompt_tokens"], s["billed_cached_tokens"]) == (1200, 768)
    assert s["predicted_vs_billed"]["calls"] == 3
    r = runner.invoke(app, ["replay", str(two_turns(tmp_path)), "--batch-output", str(outputs)])
    assert r.exit_code == 2 and "--batch-output pairs" in r.stderr


def test_anthropic_cache_control_marker_is_read_across_conversations(tmp_path: Path) -> None:
    system = [{"type": "text", "text": "You review pull requests for a payments team. " * 150,
               "cache_control": {"type": "ephemeral"}}]
    bodies = [{"model": "claude-sonnet-4-5", "max_tokens": 512, "system": system,
               "messages": [{"role": "user", "content": f"Review change number {i}, please."}]} for i in range(2)]
    trace = str(write_jsonl(tmp_path / "msgs.jsonl", bodies))
    marked = replay_json(trace, "--provider", "anthropic")
    assert marked["summary"]["input_format"] == "anthropic-messages"
    for b in bodies:
        b["system"][0].pop("cache_control", None)
    unmarked = replay_json(str(write_jsonl(tmp_path / "plain.jsonl", bodies)), "--provider", "anthropic")
    # With the marker the second conversation reads the system prompt; without it nothing was written there.
    assert marked["summary"]["cached_tokens"] > 1024
    assert unmarked["summary"]["cached_tokens"] == 0


def test_more_than_four_cache_control_markers_is_a_bad_line(tmp_path: Path) -> None:
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "system": [dict(marked) for _ in range(3)],
            "messages": [{"role": "user", "content": [dict(marked), dict(marked)]}]}
    trace = write_jsonl(tmp_path / "m.jsonl", [body])
    r = runner.invoke(app, ["replay", str(trace), "--input-format", "anthropic-messages"])
    assert r.exit_code == 1 and ":1: 5 cache_control markers; the API rejects more than 4" in r.stderr


def test_per_request_rows_carry_latency_when_scheduled(tmp_path: Path) -> None:
    trace = str(two_turns(tmp_path))
    out = tmp_path / "rows.csv"
    replay_json(trace, "--per-request", str(out))
    rows = list(csv.DictReader(out.open()))
    assert all(float(r["ttft_s"]) > 0 and float(r["e2e_s"]) >= float(r["ttft_s"]) for r in rows)
    assert [r["preemptions"] for r in rows] == ["0", "0"]
    replay_json(trace, "--per-request", str(out), "--sequential")
    rows = list(csv.DictReader(out.open()))
    assert [r["ttft_s"] for r in rows] == ["", ""]
