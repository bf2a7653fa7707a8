"""Folders of agent logs and batch pairing: counted once, nothing dropped silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from kvcache.cli.main import app

runner = CliRunner()


def run_json(*args: str) -> tuple[dict, str]:
    r = runner.invoke(app, ["replay", *args, "-f", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["summary"], r.stderr


def test_a_call_copied_into_two_files_counts_once(tmp_path: Path, shared_traces: Path) -> None:
    short = shared_traces / "claude_code" / "short.jsonl"
    folder = tmp_path / "projects"
    folder.mkdir()
    shutil.copy(short, folder / "a.jsonl")
    shutil.copy(short, folder / "b.jsonl")
    (folder / "empty.jsonl").write_text("")
    once, _ = run_json(str(short))
    both, err = run_json(str(folder))
    assert both["requests"] == once["requests"]
    assert both["billed_prompt_tokens"] == once["billed_prompt_tokens"]
    assert "appear in more than one file; each is counted once" in err
    assert "empty.jsonl: empty file passed over" in err
    assert len(both["warnings"]) == 2


def test_a_folder_mixing_log_formats_is_labelled(tmp_path: Path, shared_traces: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(shared_traces / "claude_code" / "short.jsonl", folder / "a.jsonl")
    shutil.copy(shared_traces / "openhands" / "basic_interactions.json", folder / "b.json")
    s, _ = run_json(str(folder))
    assert s["input_format"] == "claude-code+openhands"


def batch(tmp_path: Path, ids: list[str], out_ids: list[str]) -> tuple[str, str]:
    lines = [{"custom_id": i, "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"hello {i}"}]}} for i in ids]
    outs = [{"custom_id": i, "response": {"status_code": 200, "body": {
        "usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 0}}}}} for i in out_ids]
    a, b = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    a.write_text("".join(json.dumps(x) + "\n" for x in lines))
    b.write_text("".join(json.dumps(x) + "\n" for x in outs))
    return str(a), str(b)


def test_batch_pairing_reports_what_did_not_pair(tmp_path: Path) -> None:
    trace, out = batch(tmp_path, ["r1", "r2"], ["r1", "zz"])
    s, err = run_json(trace, "--batch-output", out)
    assert s["billed_prompt_tokens"] == 10
    assert "1 row(s) of" in err and "match no input line" in err
    assert "1 input line(s) have no billed row" in err


def test_a_repeated_custom_id_is_an_error(tmp_path: Path) -> None:
    trace, out = batch(tmp_path, ["r1", "r1"], ["r1"])
    r = runner.invoke(app, ["replay", trace, "--batch-output", out])
    assert r.exit_code == 1 and "in.jsonl:2: custom_id 'r1' appears twice in the batch input" in r.stderr


def test_options_that_do_not_apply_are_usage_errors(tmp_path: Path) -> None:
    trace, _ = batch(tmp_path, ["r1"], [])
    r = runner.invoke(app, ["replay", trace, "--assume-prefix-tokens", "100"])
    assert r.exit_code == 2 and "agent logs" in r.stderr
    hashed = tmp_path / "h.jsonl"
    hashed.write_text('{"timestamp": 0, "input_length": 10, "hash_ids": [1]}\n')
    r = runner.invoke(app, ["replay", str(hashed), "--tokenizer", "o200k_base"])
    assert r.exit_code == 2 and "already tokenized or hashed" in r.stderr


def test_an_empty_file_sorted_first_is_passed_over(tmp_path: Path, shared_traces: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.jsonl").write_text("")
    shutil.copy(shared_traces / "claude_code" / "short.jsonl", folder / "b.jsonl")
    s, err = run_json(str(folder))
    assert s["requests"] == 1 and "a.jsonl: empty file passed over" in err


def test_runs_with_the_same_file_name_are_not_merged(tmp_path: Path, shared_traces: Path) -> None:
    # SWE-agent ids are per file ({stem}/{n}) and carry no bill: never merged.
    sw = shared_traces / "sweagent"
    for i, name in enumerate(sorted(p.name for p in sw.glob("*.traj"))):
        (tmp_path / f"r{i}").mkdir()
        shutil.copy(sw / name, tmp_path / f"r{i}" / "instance.traj")
    each = [run_json(str(p))[0]["requests"] for p in sorted(sw.glob("*.traj"))]
    s, err = run_json(str(tmp_path))
    assert s["requests"] == sum(each) and "more than one file" not in err


def test_provider_notes_follow_what_was_modelled(tmp_path: Path) -> None:
    rows = [{"request_id": str(i), "model": m, "messages": [{"role": "user", "content": "hello " * 300}]}
            for i, m in enumerate(["gpt-4o", "gpt-5.6"])]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))
    s, _ = run_json(str(trace), "--provider", "openai")
    assert not any("breakpoints" in n for n in s["notes"]) and s["peak_cached_blocks"] is None
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s, _ = run_json(str(trace), "--provider", "openai", "--provider-ttl", "24h")  # GPT-5.6 keeps its own TTL
    assert any("GPT-5.6" in n for n in s["notes"])
