"""API request-body readers: OpenAI Chat and Responses, Anthropic Messages, batch files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app
from kvcache.engine.errors import TraceError
from kvcache.engine.traces import anthropic_messages, openai_chat, openai_responses
from kvcache.engine.traces.anthropic_render import render_request
from kvcache.engine.traces.bodies import attach_billed
from kvcache.engine.traces.records import BilledUsage
from kvcache.engine.traces.render import END, GENERATION_PROMPT
from kvcache.engine.traces.stream import RequestStream, StreamOptions
from kvcache.engine.traces.tokenizer import SegmentTokenizer

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

CHAT_TOOLS = [
    {"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS = [{"name": "grep", "input_schema": {"type": "object"}}, {"name": "ls", "input_schema": {"type": "object"}}]
SYSTEM = "You are a careful coding agent working in a large repository. " * 6
USER = {"role": "user", "content": "List the files in src/ and tell me which ones changed."}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def records(path: str, **opts) -> list:
    return list(RequestStream(path, StreamOptions(**opts)).records())


def chat(messages: list[dict], **extra) -> dict:
    return {"model": "gpt-4o", "messages": messages, "tools": CHAT_TOOLS, **extra}


def anthropic(messages: list[dict], **extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": SYSTEM, "tools": ANTHROPIC_TOOLS,
            "messages": messages, **extra}


# ------------------------------------------------------------------ detection
@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (chat([{"role": "system", "content": "s"}, USER]), "openai-chat"),
        ({"model": "gpt-4o", "messages": [USER]}, "openai-chat"),
        # max_tokens with an OpenAI-only parameter, or OpenAI structure, stays Chat
        ({"model": "gpt-4o", "max_tokens": 9, "seed": 1, "messages": [USER]}, "openai-chat"),
        ({"model": "claude-x", "max_tokens": 9, "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]},
         "openai-chat"),  # an OpenRouter-style Chat body for a Claude model
        ({"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": chat([USER])}, "openai-chat"),
        ({"model": "gpt-5", "input": "hi"}, "openai-responses"),
        ({"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": {"model": "gpt-5", "input": "hi"}},
         "openai-responses"),
        ({"model": "claude-x", "max_tokens": 9, "messages": [USER]}, "anthropic-messages"),
        (anthropic([USER]), "anthropic-messages"),
        ({"model": "claude-x", "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]}, "anthropic-messages"),
        ({"custom_id": "b1", "params": anthropic([USER])}, "anthropic-messages"),
        # kvcache's own keys make a line native even with a model
        ({"request_id": "r", "model": "gpt-4o", "messages": [USER]}, "native"),
        ({"messages": [USER]}, "native"),
    ],
)
def test_detection(tmp_path: Path, row: dict, fmt: str) -> None:
    assert RequestStream(write(tmp_path / "t.jsonl", [row])).format == fmt


def test_sample_native_trace_still_detects_as_native() -> None:
    assert RequestStream(str(REPO / "sample_traces" / "agents.jsonl")).format == "native"


def test_batch_line_for_another_endpoint_is_unknown(tmp_path: Path) -> None:
    row = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    with pytest.raises(TraceError, match="unknown trace format"):
        RequestStream(write(tmp_path / "t.jsonl", [row]))


# ------------------------------------------------------------------ rendering
def test_chat_renders_tools_then_messages_in_order() -> None:
    rec = openai_chat.parse(chat([{"role": "system", "content": "S"}, USER]), "t", 1)
    assert rec.segments[0] == "<|tools|>\n" + json.dumps(CHAT_TOOLS) + "\n" + END
    assert rec.segments[1:] == ["<|system|>\n", "S" + END, "<|user|>\n", USER["content"] + END, GENERATION_PROMPT]


def test_anthropic_renders_tools_system_messages_and_tool_order_matters() -> None:
    rec = anthropic_messages.parse(anthropic([USER]), "t", 1)
    assert rec.segments[0].startswith('<|tools|>\n[{"name": "grep"')
    assert rec.segments[1] == "<|system|>\n" + SYSTEM + END
    assert rec.segments[2:] == ["<|user|>\n", USER["content"] + END, GENERATION_PROMPT]
    swapped = anthropic_messages.parse(anthropic([USER], tools=ANTHROPIC_TOOLS[::-1]), "t", 1)
    assert swapped.segments[0] != rec.segments[0] and swapped.segments[1:] == rec.segments[1:]


def test_chat_tool_order_changes_the_prompt() -> None:
    a = openai_chat.parse(chat([USER]), "t", 1).segments
    b = openai_chat.parse(chat([USER], tools=CHAT_TOOLS[::-1]), "t", 1).segments
    assert a[0] != b[0] and a[1:] == b[1:]


def test_cache_control_does_not_move_a_token() -> None:
    marked = {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
    plain = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    a = anthropic_messages.parse(anthropic([marked]), "t", 1)
    b = anthropic_messages.parse(anthropic([plain]), "t", 1)
    assert a.segments == b.segments and a.cache_ttl == "5m" and b.cache_ttl is None


# ------------------------------------------------------------------ replay through the CLI
def test_second_chat_body_hits_the_first_prompt(tmp_path: Path) -> None:
    reply = "src/ holds main.py and util.py; util.py changed yesterday."
    first = chat([{"role": "system", "content": SYSTEM}, USER], user="alice")
    second = chat([{"role": "system", "content": SYSTEM}, USER, {"role": "assistant", "content": reply},
                   {"role": "user", "content": "Show me the diff of util.py."}], user="alice")
    trace = write(tmp_path / "chat.jsonl", [first, second])
    rows_path = tmp_path / "rows.jsonl"
    r = runner.invoke(app, ["replay", trace, "-f", "json", "--per-request", str(rows_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)["summary"]
    assert summary["input_format"] == "openai-chat" and summary["requests"] == 2
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()]
    assert [x["request_id"] for x in rows] == ["line-1", "line-2"] and rows[0]["session_id"] == "alice"
    # No reply was recorded, so turn 2 hits exactly the full blocks of turn 1's prompt.
    assert rows[0]["cached_tokens"] == 0
    assert rows[1]["cached_tokens"] == rows[0]["prompt_tokens"] // 16 * 16 > 0
    assert summary["cached_tokens"] == rows[1]["cached_tokens"]


def test_recorded_chat_reply_is_hit_by_the_next_turn(tmp_path: Path) -> None:
    reply = "util.py changed: the parser now accepts gzip input and reports the line of each error. " * 2
    resp = {"id": "chatcmpl-1", "created": 5, "choices": [{"message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 64}}}
    first = chat([USER], response=resp)
    second = chat([USER, {"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks."}])
    stream = RequestStream(write(tmp_path / "c.jsonl", [first, second]))
    reqs = list(stream)
    assert reqs[0].request_id == "chatcmpl-1" and reqs[0].arrival == 5.0
    assert (reqs[0].billed_prompt_tokens, reqs[0].billed_cached_tokens) == (80, 64)
    # Turn 1's reply is the body turn 2 renders, so its decode blocks are shared too.
    assert reqs[1].block_keys[: len(reqs[0].block_keys)] == reqs[0].block_keys
    assert len(reqs[0].block_keys) > reqs[0].prompt_tokens // 16


# ------------------------------------------------------------------ Responses chains
def _resp(rid: str, output: list[dict], reasoning: int = 0) -> dict:
    return {"id": rid, "created_at": 1, "output": output, "usage": {
        "input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10 + reasoning,
        "output_tokens_details": {"reasoning_tokens": reasoning}}}


def test_responses_chain_is_append_only(tmp_path: Path) -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": '{"path": "src"}'}
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "main.py util.py"}]}
    rows = [
        {"model": "gpt-5", "instructions": SYSTEM, "input": "What is in src/?",
         "response": _resp("resp_1", [{"type": "reasoning", "id": "rs_1"}, call], reasoning=30)},
        {"model": "gpt-5", "instructions": SYSTEM, "previous_response_id": "resp_1",
         "input": [{"type": "function_call_output", "call_id": "c1", "output": "main.py util.py"}],
         "response": _resp("resp_2", [answer])},
        {"model": "gpt-5", "instructions": SYSTEM, "previous_response_id": "resp_2", "input": "Thanks; and tests/?"},
    ]
    r1, r2, r3 = records(write(tmp_path / "r.jsonl", rows))
    # A tool round trip: turn 2 = turn 1's prompt + its whole reply + the tool output.
    assert r2.segments[: len(r1.segments)] == r1.segments
    assert r2.segments[len(r1.segments): len(r1.segments) + len(r1.output_segments)] == r1.output_segments
    assert r2.segments[-3:] == ["<|tool|>\n", "main.py util.py" + END, GENERATION_PROMPT]
    assert (30,) == tuple(len(s) for s in r1.output_segments if isinstance(s, tuple))
    # A new user message: the API drops older reasoning, so turn 3 leaves it out.
    assert r3.segments[: len(r1.segments)] == r1.segments
    assert not any(isinstance(s, tuple) for s in r3.segments)
    assert r3.segments[-3:] == ["<|user|>\n", "Thanks; and tests/?" + END, GENERATION_PROMPT]
    assert {r.session_id for r in (r1, r2, r3)} == {"resp_1"}
    assert [r.request_id for r in (r1, r2, r3)] == ["resp_1", "resp_2", "line-3"]
    assert r1.billed == BilledUsage(100, 0)


def test_responses_unknown_previous_response_is_a_line_error(tmp_path: Path) -> None:
    rows = [{"model": "gpt-5", "input": "hi", "response": {"id": "resp_1", "usage": {"input_tokens": 5}}},
            {"model": "gpt-5", "input": "more", "previous_response_id": "resp_1"},
            {"model": "gpt-5", "input": "more", "previous_response_id": "resp_9"}]
    path = write(tmp_path / "r.jsonl", rows)
    with pytest.raises(TraceError, match=r"r.jsonl:2: 'resp_1' was recorded without its 'output'"):
        records(path)
    skipped = RequestStream(path, StreamOptions(skip_invalid=True))
    assert len(list(skipped.records())) == 1
    assert [s.line for s in skipped.skipped] == [2, 3] and "resp_9" in skipped.skipped[1].reason


# ------------------------------------------------------------------ batch files
def test_openai_batch_output_maps_custom_id_to_usage(tmp_path: Path) -> None:
    out = write(tmp_path / "out.jsonl", [
        {"id": "b1", "custom_id": "req-1", "error": None, "response": {"status_code": 200, "body": {
            "usage": {"prompt_tokens": 1200, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1024}}}}},
        {"id": "b2", "custom_id": "req-2", "error": None, "response": {"status_code": 200, "body": {
            "usage": {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 0}}}}},
        {"id": "b3", "custom_id": "req-3", "response": {"status_code": 500, "body": {}}, "error": None},
        {"id": "b4", "custom_id": "req-4", "response": None, "error": {"code": "x", "message": "y"}},
    ])
    billed = openai_chat.load_batch_output(out)
    assert billed == {"req-1": BilledUsage(1200, 1024), "req-2": BilledUsage(900, 0)}
    inputs = write(tmp_path / "in.jsonl", [
        {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": chat([USER])}
        for cid in ("req-1", "req-2", "req-3")])
    recs = list(attach_billed(records(inputs), billed))
    assert [(r.request_id, r.billed) for r in recs] == [
        ("req-1", BilledUsage(1200, 1024)), ("req-2", BilledUsage(900, 0)), ("req-3", None)]


def test_batch_output_duplicate_custom_id_is_an_error(tmp_path: Path) -> None:
    line = {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 3}}}}
    with pytest.raises(TraceError, match=r"out.jsonl:2: custom_id 'a' already appeared on line 1"):
        openai_chat.load_batch_output(write(tmp_path / "out.jsonl", [line, line]))


def test_anthropic_batch_results_map_custom_id_to_usage(tmp_path: Path) -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300, "output_tokens": 7}
    path = write(tmp_path / "results.jsonl", [
        {"custom_id": "a", "result": {"type": "succeeded", "message": {"id": "msg_1", "usage": usage}}},
        {"custom_id": "b", "result": {"type": "errored", "error": {"type": "invalid_request"}}},
        {"custom_id": "c", "result": {"type": "succeeded", "message": {"usage": {"input_tokens": 50}}}},
    ])
    assert anthropic_messages.load_batch_results(path) == {
        "a": BilledUsage(prompt_tokens=2310, cached_tokens=2000, cache_write_tokens=300),
        "c": BilledUsage(prompt_tokens=50, cached_tokens=0, cache_write_tokens=0),
    }


def test_anthropic_recorded_usage_and_batch_ids(tmp_path: Path) -> None:
    usage = {"input_tokens": 4, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 90,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 90}, "output_tokens": 3}
    rows = [{"custom_id": "job-1", "params": anthropic([USER], metadata={"user_id": "u7"})},
            anthropic([USER], response={"id": "msg_2", "content": [{"type": "text", "text": "ok"}], "usage": usage})]
    a, b = records(write(tmp_path / "a.jsonl", rows))
    assert (a.request_id, a.session_id, a.billed) == ("job-1", "u7", None)
    assert (b.request_id, b.billed, b.cache_ttl) == ("msg_2", BilledUsage(94, 0, 90), "1h")
    assert b.output_text == "ok" + END and b.output_length == 3


# ------------------------------------------------------------------ malformed bodies
@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([chat([USER]), {"model": "gpt-4o", "messages": "hi"}], ":2: expected a 'messages' list"),
        ([chat([USER]), chat([{"role": "user", "content": [{"type": "video"}]}])], ":2: messages[0]: unsupported content part"),
        ([anthropic([USER]), anthropic([{"role": "user", "content": [{"type": "text"}]}])], ":2: messages[0]: a text block"),
        ([{"model": "gpt-5", "input": "hi"}, {"model": "gpt-5", "input": 3}], ":2: expected 'input' to be a string"),
        ([{"model": "gpt-5", "input": "hi", "previous_response_id": "nope"}], ":1: previous_response_id 'nope'"),
        ([chat([USER], usage={"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}})], ":1: usage has 9 cached"),
    ],
)
def test_malformed_body_is_one_line_error(tmp_path: Path, rows: list[dict], expected: str) -> None:
    trace = write(tmp_path / "bad.jsonl", rows)
    r = runner.invoke(app, ["replay", trace, "-f", "json"])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"kvcache: error: {trace}") and expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_wrong_api_under_override_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"custom_id": "b", "params": anthropic([USER])}])
    with pytest.raises(TraceError, match=r"t.jsonl:1: an Anthropic Message Batches line"):
        records(path, input_format="openai-chat")


# ------------------------------------------------------------------ breakpoints
def _text(t: str, ttl: str | None = None) -> dict:
    return {"type": "text", "text": t, "cache_control": {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}}


def test_breakpoints_name_the_segments_that_end_at_markers() -> None:
    tools = [ANTHROPIC_TOOLS[0], {**ANTHROPIC_TOOLS[1], "cache_control": {"type": "ephemeral"}}]
    body = anthropic(
        [{"role": "user", "content": [_text("a")]},
         {"role": "assistant", "content": "b"},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [_text("r", "1h")]}]}],
        tools=tools, system=[{"type": "text", "text": "x"}, _text("y")],
    )
    segs = render_request(body["tools"], body["system"], body["messages"])
    # [0 tools*][1 system*][2 user][3 body*][4 assistant][5 body][6 user][7 body*][8 generation prompt]
    assert anthropic_messages.breakpoints(body) == [0, 1, 3, 7] and len(segs) == 9
    assert all(segs[i].endswith(END) for i in (0, 1, 3, 7))
    assert anthropic_messages.breakpoints({"custom_id": "b", "params": body}) == [0, 1, 3, 7]
    assert anthropic_messages.parse(body, "t", 1).cache_ttl == "1h"  # the last marker's


def test_breakpoints_automatic_caching_and_none() -> None:
    plain = anthropic([USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go"}], tools=None)
    assert anthropic_messages.breakpoints(plain) == []
    # Top-level cache_control marks the end of the last message: [0 system][1 2][3 4][5 6][7 gen]
    assert anthropic_messages.breakpoints({**plain, "cache_control": {"type": "ephemeral"}}) == [6]
    # A marker inside a segment is reported at that segment's end (deduplicated).
    two = anthropic([{"role": "user", "content": [_text("a"), _text("b"), {"type": "text", "text": "c"}]}], tools=None)
    assert anthropic_messages.breakpoints(two) == [2]


def test_prompts_tokenize_like_their_segments(tmp_path: Path) -> None:
    # Guard: every reader's segments are plain strings or token tuples the stream can encode.
    tok = SegmentTokenizer("cl100k_base")
    for rec in (openai_chat.parse(chat([USER]), "t", 1), anthropic_messages.parse(anthropic([USER]), "t", 1),
                openai_responses.Parser()({"model": "gpt-5", "input": "hi", "tools": []}, "t", 1)):
        assert tok.encode_segments(rec.segments) and rec.segments[-1] == GENERATION_PROMPT


def test_conversation_state_is_followed_and_starts_empty(tmp_path: Path) -> None:
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]}
    rows = [{"model": "gpt-5", "conversation": "conv_1", "input": "hi", "response": _resp("resp_1", [answer])},
            {"model": "gpt-5", "conversation": {"id": "conv_1"}, "input": "again"},
            {"model": "gpt-5", "conversation": "resp_1", "input": "other"}]  # a conversation id is not a response id
    r1, r2, r3 = records(write(tmp_path / "c.jsonl", rows))
    assert r2.segments[: len(r1.segments) + len(r1.output_segments)] == r1.segments + r1.output_segments
    assert r3.segments == ["<|user|>\n", "other" + END, GENERATION_PROMPT]
    assert (r1.session_id, r2.session_id, r3.session_id) == ("conv_1", "conv_1", "resp_1")
