"""Trace readers, rendering and request building."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from kvcache.engine.config import CacheConfig
from kvcache.engine.errors import TraceError
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.traces.render import END, GENERATION_PROMPT, render_segments
from kvcache.engine.traces.stream import RequestStream, StreamOptions
from kvcache.engine.traces.tokenizer import SegmentTokenizer


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def replay(path: str, **opts) -> list:
    stream = RequestStream(path, StreamOptions(**opts))
    return list(SequentialReplayer(CacheConfig(block_size=stream.block_size)).run(stream))


TOOLS = [{"type": "function", "function": {"name": "grep", "description": "search", "parameters": {"type": "object"}}}]
SYSTEM = "You are a careful coding agent. " * 40


def native(rid: str, messages: list[dict], **extra) -> dict:
    return {"request_id": rid, "session_id": "s1", "org": "acme", "tools": TOOLS, "system": SYSTEM,
            "messages": messages, **extra}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"hash_ids": [1], "input_length": 10}, "mooncake"),
        ({"prompt_token_ids": [1, 2]}, "token-ids"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "native"),
    ],
)
def test_format_detection(tmp_path: Path, row: dict, fmt: str) -> None:
    assert RequestStream(write(tmp_path / "t.jsonl", [row])).format == fmt


def test_input_format_override_reports_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"prompt_token_ids": [1, 2]}])
    with pytest.raises(TraceError, match=r"t.jsonl:1: expected a 'messages' list"):
        list(RequestStream(path, StreamOptions(input_format="native")))


def test_render_order_is_tools_system_messages() -> None:
    segs = render_segments(TOOLS, "sys", [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert segs[0].startswith("<|tools|>\n[{") and segs[1] == "<|system|>\nsys" + END
    assert segs[2:] == ["<|user|>\n", "ab" + END, GENERATION_PROMPT]


def test_render_keeps_json_key_order_so_reordering_breaks() -> None:
    a = render_segments([{"b": 1, "a": 2}], None, [])
    b = render_segments([{"a": 2, "b": 1}], None, [])
    assert a != b


def test_next_turn_hits_the_recorded_reply(tmp_path: Path) -> None:
    # Turn 2 carries turn 1's reply verbatim, so it hits every full block of
    # turn 1's prompt + reply (KV for P + N - 1 tokens) and more.
    user1 = {"role": "user", "content": "List the files in src/."}
    reply = "I will look at the directory listing first, then summarise it for you in detail."
    rows = [
        native("t0", [user1], output_text=reply, arrival=0),
        native("t1", [user1, {"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks, now grep for TODO."}], arrival=1),
    ]
    path = write(tmp_path / "n.jsonl", rows)
    stream = RequestStream(path)
    reqs = list(stream)
    p0, n0 = reqs[0].prompt_tokens, reqs[0].output_tokens
    results = list(SequentialReplayer(CacheConfig()).run(iter(reqs)))
    assert results[0].cached_tokens == 0
    assert results[1].cached_tokens == (p0 + n0 - 1) // 16 * 16


def test_reply_with_tool_calls_is_hit_whole_by_the_next_turn(tmp_path: Path) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "TODO"}'}}]
    user1 = {"role": "user", "content": "Find the TODOs in the repository, please."}
    reply = {"role": "assistant", "content": "Searching for TODO markers.", "tool_calls": calls}
    rows = [
        native("t0", [user1], output_text=reply["content"], output_tool_calls=calls, arrival=0),
        native("t1", [user1, reply, {"role": "tool", "tool_call_id": "call_1", "content": "src/a.py:3: # TODO"}], arrival=1),
    ]
    reqs = list(RequestStream(write(tmp_path / "n.jsonl", rows)))
    results = list(SequentialReplayer(CacheConfig()).run(iter(reqs)))
    p0, n0 = reqs[0].prompt_tokens, reqs[0].output_tokens
    assert results[1].cached_tokens == (p0 + n0 - 1) // 16 * 16
    # Without the reply's tool calls, the generated tokens stop short of the history's.
    rows[0].pop("output_tool_calls")
    reqs = list(RequestStream(write(tmp_path / "m.jsonl", rows)))
    assert reqs[0].output_tokens < n0


def test_reply_without_text_fills_blocks_that_never_hit(tmp_path: Path) -> None:
    user1 = {"role": "user", "content": "hello"}
    rows = [
        native("t0", [user1], output_length=200, arrival=0),
        native("t1", [user1, {"role": "assistant", "content": "x" * 50}, {"role": "user", "content": "more"}], arrival=1),
    ]
    results = replay(write(tmp_path / "n.jsonl", rows))
    reqs = list(RequestStream(str(tmp_path / "n.jsonl")))
    # Only turn 1's full prompt blocks can hit: its decode blocks have unknown tokens.
    assert results[1].cached_tokens == reqs[0].prompt_tokens // 16 * 16
    assert len(reqs[0].block_keys) == (reqs[0].prompt_tokens + 199) // 16


def test_orgs_are_isolated(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "same prompt for everyone " * 10}]
    rows = [dict(native("a", msgs), org="acme"), dict(native("b", msgs), org="globex"), dict(native("c", msgs), org="acme")]
    results = replay(write(tmp_path / "o.jsonl", rows))
    assert results[1].cached_tokens == 0
    assert results[2].cached_tokens > 0


def test_segments_are_tokenized_once(tmp_path: Path) -> None:
    # A 6-turn session re-sends its history every turn; each distinct segment is
    # encoded once, the rest are memo hits.
    msgs: list[dict] = []
    rows = []
    for t in range(6):
        msgs = msgs + [{"role": "user", "content": f"question {t} " * 20}]
        rows.append(native(f"t{t}", list(msgs), output_text=f"answer {t} " * 10, arrival=t))
        msgs = msgs + [{"role": "assistant", "content": f"answer {t} " * 10}]
    stream = RequestStream(write(tmp_path / "m.jsonl", rows))
    list(stream)
    tok = stream.tokenizers["cl100k_base"]
    distinct = {s for r in stream_records(stream.path) for s in r} | {f"answer {t} " * 10 + END for t in range(6)}
    assert tok.segments_encoded == len(distinct)
    assert tok.segments_reused > tok.segments_encoded


def stream_records(path: str) -> list[list[str]]:
    return [r.segments for r in RequestStream(path).records()]


def test_tokenizer_is_offline_cl100k() -> None:
    tok = SegmentTokenizer()
    assert tok.encode("hello world") == [15339, 1917]  # cl100k_base ids
    assert tok.encode("<|endoftext|>") != [100257]  # special tokens in text stay text


def test_hash_id_cap_modes(tmp_path: Path) -> None:
    # A repeated 1024-token prompt (2 blocks of 512): the trace convention hits both
    # blocks, vLLM's prompt-1 cap recomputes the whole last block.
    rows = [{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [7, 8]},
            {"timestamp": 1, "input_length": 1024, "output_length": 1, "hash_ids": [7, 8]}]
    path = write(tmp_path / "h.jsonl", rows)
    assert [r.cached_tokens for r in replay(path)] == [0, 1024]
    assert [r.cached_tokens for r in replay(path, hit_cap="vllm")] == [0, 512]


def test_hash_id_partial_block_counts_min_of_hits_and_length(tmp_path: Path) -> None:
    rows = [{"timestamp": 0, "input_length": 700, "output_length": 3, "hash_ids": [1, 2]},
            {"timestamp": 5, "input_length": 700, "output_length": 3, "hash_ids": [1, 2]}]
    results = replay(write(tmp_path / "h.jsonl", rows))
    assert (results[1].hit_blocks, results[1].blocks, results[1].cached_tokens) == (2, 2, 700)


def test_trace_block_size_override(tmp_path: Path) -> None:
    rows = [{"timestamp": 0, "input_length": 64, "hash_ids": [1, 2, 3, 4]}]
    stream = RequestStream(write(tmp_path / "h.jsonl", rows), StreamOptions(trace_block_size=16))
    assert stream.block_size == 16 and len(list(stream)) == 1


def test_stdin_gzip_is_sniffed(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    data = gzip.compress(b'{"prompt_token_ids": [1, 2, 3]}\n')

    class FakeStdin:
        buffer = io.BufferedReader(io.BytesIO(data))

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    assert [r.prompt_tokens for r in RequestStream("-")] == [3]
