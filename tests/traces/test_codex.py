"""Codex CLI rollouts: calls from token_count events, prompts, redaction, bad lines."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kvcache.engine.traces import codex
from kvcache.engine.traces.records import ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.render import END, GENERATION_PROMPT
from kvcache.engine.traces.responses_render import render_item, render_prefix, render_reply_items
from kvcache.engine.traces.tokenizer import SegmentTokenizer, pseudo_tokens

# ---------------------------------------------------------------- line builders


def line(kind: str, payload: dict | None, second: int = 0) -> dict[str, Any]:
    return {"timestamp": f"2026-02-23T10:00:{second:02d}.000Z", "type": kind, "payload": payload}


def meta(sid: str = "s1", instructions: str = "You are Codex, a coding agent.") -> dict:
    return line("session_meta", {"id": sid, "base_instructions": {"text": instructions}})


def ctx(effort: str = "medium", limit: int = 10000) -> dict:
    return line("turn_context", {"model": "gpt-5-codex", "effort": effort,
                                 "truncation_policy": {"mode": "tokens", "limit": limit}})


def msg(role: str, text: str, second: int = 0) -> dict:
    part = "output_text" if role == "assistant" else "input_text"
    return line("response_item", {"type": "message", "role": role, "content": [{"type": part, "text": text}]}, second)


def thought(sha: str, size: int = 1200, second: int = 0) -> dict:
    return line("response_item", {"type": "reasoning", "summary": [],
                                  "encrypted_content": f"[REDACTED_ENCRYPTED_CONTENT len={size} sha={sha}]"}, second)


def call(cid: str, args: str = '{"cmd": "ls"}', second: int = 0) -> dict:
    return line("response_item", {"type": "function_call", "name": "exec_command", "arguments": args, "call_id": cid}, second)


def output(cid: str, text: str) -> dict:
    return line("response_item", {"type": "function_call_output", "call_id": cid, "output": text})


def usage(inp: int, cached: int, out: int = 10, reasoning: int = 0) -> dict:
    return {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out,
            "reasoning_output_tokens": reasoning, "total_tokens": inp + out}


def tokens(total: dict | None, last: dict | None = None, second: int = 0) -> dict:
    info = None if total is None else {"total_token_usage": total, **({"last_token_usage": last} if last else {})}
    return line("event_msg", {"type": "token_count", "info": info, "rate_limits": {}}, second)


def read(rows: list[dict], options: ReaderOptions | None = None, path: str = "rollout-x.jsonl") -> list:
    return list(codex.read_records(path, enumerate(rows, 1), options or ReaderOptions()))


def calls(rows: list[dict], **kw: Any) -> list[TraceRecord]:
    out = read(rows, **kw)
    assert not [r for r in out if isinstance(r, SkippedLine)], out
    return out


def two_calls() -> list[dict]:
    """A turn of two calls: the first reads and calls a tool, the second answers."""
    return [
        meta(), ctx(), msg("developer", "Sandbox: workspace-write."), msg("user", "list the files"),
        tokens(None),                                                       # 5: rate limits only
        thought("aaaa1111", 1500, second=3), call("c1", second=4),          # 6-7: call 1's reply
        tokens(usage(5000, 0, 40, 25), usage(5000, 0, 40, 25), second=5),   # 8: call 1 ends
        output("c1", "a.py\nb.py\n"), ctx(),                                 # 9-10: next input
        tokens(usage(5000, 0, 40, 25), usage(5000, 0, 40, 25), second=6),   # 11: a repeat
        thought("bbbb2222", 900, second=8), msg("assistant", "Two files.", second=9),
        tokens(usage(10100, 4992, 60, 30), usage(5100, 4992, 20, 5), second=10),  # 14: call 2 ends
    ]


# ---------------------------------------------------------------- synthetic rollouts


def test_looks_like_rollout_lines_only() -> None:
    assert codex.looks_like(meta()) and codex.looks_like(tokens(None))
    assert not codex.looks_like({"messages": [{"role": "user", "content": "hi"}]})
    assert not codex.looks_like({"type": "user", "message": {"role": "user", "content": "hi"}})


def test_repeated_token_count_events_make_one_call() -> None:
    recs = calls(two_calls())
    # Four token_count events: null, call 1, its repeat (same totals), call 2.
    assert [r.line for r in recs] == [8, 14]
    assert [r.request_id for r in recs] == ["s1/1", "s1/2"]
    assert [(r.billed.prompt_tokens, r.billed.cached_tokens) for r in recs] == [(5000, 0), (5100, 4992)]
    assert [r.output_length for r in recs] == [40, 20]
    assert {r.session_id for r in recs} == {"s1"} and recs[0].model == "gpt-5-codex"
    # arrival: the first reply item's timestamp (10:00:03 and 10:00:08 UTC), not the event's
    start = datetime(2026, 2, 23, 10, 0, 0, tzinfo=timezone.utc).timestamp()
    assert [r.arrival - start for r in recs] == [pytest.approx(3.0), pytest.approx(8.0)]


def test_prompt_is_history_before_the_reply_and_reply_is_next_history() -> None:
    (r1, out1), (r2, _) = list(codex.read_calls("x.jsonl", enumerate(two_calls(), 1), ReaderOptions()))
    assert r1.segments[0] == f"<|system|>\nReasoning: medium{END}"
    assert r1.segments[1:3] == ["<|developer|>\n", "You are Codex, a coding agent." + END]
    assert r1.segments[3] == "<|tools|>\n" and r1.segments[-3:] == ["<|user|>\n", "list the files" + END, GENERATION_PROMPT]
    # The reply is the reasoning (25 billed tokens) and the tool call, rendered as history.
    fc = render_item(two_calls()[6]["payload"])
    assert out1 == [pseudo_tokens("codex-reasoning/aaaa1111/1500", 25), END, *fc]
    # Call 2 sends call 1's prompt, then its reply, then the tool output: append-only.
    assert r2.segments[: len(r1.segments) + len(out1)] == r1.segments + out1
    assert r2.segments[len(r1.segments) + len(out1):] == ["<|tool|>\n", "a.py\nb.py\n" + END, GENERATION_PROMPT]
    assert r1.output_text is None and r1.output_segments == out1  # the reply holds pseudo tokens


def test_a_reply_never_reaches_back_past_the_previous_call() -> None:
    # Two calls with no input between them: call 1's reply is call 2's history.
    rows = [meta(), ctx(), msg("user", "hi"), msg("assistant", "one"), tokens(usage(900, 0, 3), usage(900, 0, 3)),
            msg("assistant", "two"), tokens(usage(1810, 896, 6), usage(910, 896, 3))]
    (r1, out1), (r2, out2) = list(codex.read_calls("x.jsonl", enumerate(rows, 1), ReaderOptions()))
    assert out1 == ["one" + END] and out2 == ["two" + END]
    assert r2.segments[-3:] == [*r1.segments[-1:], "one" + END, GENERATION_PROMPT]


def test_plain_text_reply_travels_as_segments() -> None:
    rows = [meta(), ctx(), msg("user", "hi"), msg("assistant", "Hello."), tokens(usage(900, 0, 3), usage(900, 0, 3))]
    (rec,) = calls(rows)
    assert rec.output_segments == ["Hello." + END]


def test_missing_last_token_usage_is_derived_from_totals() -> None:
    rows = two_calls()
    for i in (7, 10, 13):  # drop every last_token_usage
        rows[i]["payload"]["info"].pop("last_token_usage")
    recs = calls(rows)
    assert [(r.billed.prompt_tokens, r.billed.cached_tokens, r.output_length) for r in recs] == [
        (5000, 0, 40), (5100, 4992, 20)]


def test_totals_going_down_without_last_usage_is_skipped() -> None:
    rows = [meta(), ctx(), msg("user", "hi"), tokens(usage(900, 0)), msg("user", "again"), tokens(usage(800, 0))]
    out = read(rows)
    assert isinstance(out[1], SkippedLine) and out[1].line == 6 and "went down" in out[1].reason


def test_malformed_lines_are_skipped_lines_and_the_rest_is_read() -> None:
    rows = [meta(), ctx(),
            {"timestamp": "t", "type": "response_item"},                   # 3: no payload
            line("mystery", {"x": 1}),                                      # 4: unknown line type
            line("response_item", {"type": "image_generation_call"}),       # 5: an item we cannot render
            msg("user", "hi"),
            line("event_msg", {"type": "token_count", "info": {"total_token_usage": "lots"}}),  # 7
            msg("assistant", "ok"), tokens(usage(900, 0), usage(900, 0))]
    out = read(rows, path="p.jsonl")
    skipped = [s for s in out if isinstance(s, SkippedLine)]
    assert [s.line for s in skipped] == [3, 4, 5, 7] and {s.path for s in skipped} == {"p.jsonl"}
    (rec,) = [r for r in out if isinstance(r, TraceRecord)]
    assert rec.line == 9 and rec.segments[-3:] == ["<|user|>\n", "hi" + END, GENERATION_PROMPT]


def test_redacted_spans_with_equal_sha_and_len_share_tokens() -> None:
    same = "[REDACTED_TEXT len=403 sha=1eb53f31]"
    a = calls([meta("a"), ctx(), msg("user", same), msg("assistant", "x"), tokens(usage(900, 0), usage(900, 0))])[0]
    b = calls([meta("b"), ctx(), msg("user", same), msg("assistant", "x"), tokens(usage(900, 0), usage(900, 0))])[0]
    c = calls([meta("c"), ctx(), msg("user", "[REDACTED_TEXT len=403 sha=99999999]"), msg("assistant", "x"),
               tokens(usage(900, 0), usage(900, 0))])[0]
    span_a, span_b, span_c = a.segments[-3], b.segments[-3], c.segments[-3]
    assert isinstance(span_a, tuple) and len(span_a) == math.ceil(403 / 4)
    assert span_a == span_b and span_a != span_c


def test_text_around_a_redacted_span_stays_text() -> None:
    segs = codex.text_segments("see [REDACTED_NAME len=8 sha=ab12] now")
    assert segs == ["see ", pseudo_tokens("codex-redacted/ab12/8", 2), " now"]


def test_tool_outputs_are_cut_to_codex_history_budget() -> None:
    # limit 100 tokens -> 120 with Codex's 20% allowance -> 480 bytes kept.
    assert len(codex.truncated_segments("[REDACTED_OUTPUT len=5000 sha=ff]", 480)[0]) == 120
    assert codex.truncated_segments("[REDACTED_OUTPUT len=400 sha=ff]", 480) == [pseudo_tokens("codex-redacted/ff/400", 100)]
    (cut,) = codex.truncated_segments("x" * 300 + "y" * 700, 480)
    assert cut == "x" * 240 + "…130 tokens truncated…" + "y" * 240
    rows = [meta(), ctx(limit=100), msg("user", "go"), call("c1"), tokens(usage(900, 0), usage(900, 0)),
            output("c1", "[REDACTED_OUTPUT len=5000 sha=ff]"), msg("assistant", "done"),
            tokens(usage(2000, 896), usage(1100, 896))]
    assert len(calls(rows)[1].segments[-3]) == 120


def test_reasoning_older_than_the_latest_user_message_is_dropped() -> None:
    rows = [*two_calls(), msg("user", "now count them"),
            msg("assistant", "2", second=20), tokens(usage(12000, 4992, 61, 30), usage(1900, 0, 1), second=21)]
    r1, r2, r3 = calls(rows)
    r1_thought = pseudo_tokens("codex-reasoning/aaaa1111/1500", 25)
    assert r1_thought in r2.segments  # still in the turn: sent back
    assert r1_thought not in r3.segments and pseudo_tokens("codex-reasoning/bbbb2222/900", 5) not in r3.segments
    # The cache breaks exactly where call 1's reasoning was.
    cut = r2.segments.index(r1_thought)
    assert r3.segments[:cut] == r2.segments[:cut] and r3.segments[cut] != r2.segments[cut]
    assert "Two files." + END in r3.segments  # assistant messages stay


def test_tools_are_inferred_from_the_first_bill_per_session() -> None:
    recs = calls(two_calls())
    tools = recs[0].segments[4]
    assert isinstance(tools, tuple) and recs[1].segments[4] == tools
    ours = len(SegmentTokenizer("o200k_base").encode_segments(recs[0].segments))
    assert ours == 5000  # the first call's prompt matches its bill exactly
    other = calls([meta("s2"), *two_calls()[1:]])[0].segments[4]
    assert len(other) == len(tools) and other != tools  # another session's tools may differ


def test_assumed_prefix_tokens_are_shared_by_sessions() -> None:
    opts = ReaderOptions(assume_prefix_tokens=700)
    a = calls(two_calls(), options=opts)[0].segments[4]
    b = calls([meta("s2"), *two_calls()[1:]], options=opts)[0].segments[4]
    assert len(a) == 700 and a == b


def test_effort_change_breaks_the_prefix_at_the_system_message() -> None:
    rows = two_calls()
    rows[9] = ctx(effort="high")
    r1, r2 = calls(rows)
    assert r2.segments[0] == f"<|system|>\nReasoning: high{END}" and r2.segments[1:len(r1.segments)] == r1.segments[1:]


def test_compaction_replaces_the_history() -> None:
    summary = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "SUMMARY"}]}
    rows = [*two_calls(), line("compacted", {"message": "SUMMARY", "replacement_history": [summary]}),
            msg("user", "go on"), msg("assistant", "ok"), tokens(usage(3000, 0, 2), usage(1000, 0, 2))]
    *_, last = calls(rows)
    assert last.segments[6:] == ["<|user|>\n", "SUMMARY" + END, "<|user|>\n", "go on" + END, GENERATION_PROMPT]


def test_responses_prefix_and_reply_rendering() -> None:
    tools = [{"type": "function", "name": "grep", "parameters": {"type": "object"}}]
    assert render_prefix("Be brief.", tools, "low") == [
        f"<|system|>\nReasoning: low{END}", "<|developer|>\n", "Be brief." + END,
        "<|tools|>\n", json.dumps(tools) + "\n" + END]
    items = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
             {"type": "function_call", "name": "grep", "arguments": "{}", "call_id": "c9"}]
    reply = render_reply_items([render_item(i) for i in items])
    assert reply == ["Hi." + END, GENERATION_PROMPT, "<|tool_call|>grep\n{}\n" + END]  # no call_id


# ---------------------------------------------------------------- the shared real rollouts


def _rollouts(root: Path) -> list[Path]:
    files = sorted((root / "codex").glob("rollout-*.jsonl"))
    if not files:
        pytest.skip("no Codex rollouts in ../shared/traces/codex")
    return files


def _objects(path: Path) -> list[tuple[int, dict]]:
    return [(n, json.loads(text)) for n, text in enumerate(path.read_text().splitlines(), 1)]


def _distinct_totals(objs: list[tuple[int, dict]]) -> int:
    """Counted independently of the reader: changes of total_token_usage."""
    seen, last = 0, None
    for _, o in objs:
        info = o["payload"].get("info") if o["payload"].get("type") == "token_count" else None
        if info and info["total_token_usage"] != last:
            seen, last = seen + 1, info["total_token_usage"]
    return seen


def test_shared_rollout_12_40_23_calls_and_billed_share(shared_traces: Path) -> None:
    (path,) = [p for p in _rollouts(shared_traces) if "T12-40-23" in p.name]
    recs = [r for r in codex.read_records(str(path), _objects(path), ReaderOptions())]
    assert len(recs) == 81 and all(isinstance(r, TraceRecord) for r in recs)
    share = sum(r.billed.cached_tokens for r in recs) / sum(r.billed.prompt_tokens for r in recs)
    assert share == pytest.approx(0.949, abs=0.001)


def test_every_shared_rollout_reads_cleanly(shared_traces: Path) -> None:
    tok = SegmentTokenizer("o200k_base")
    for path in _rollouts(shared_traces):
        objs = _objects(path)
        out = list(codex.read_records(str(path), objs, ReaderOptions()))
        recs = [r for r in out if isinstance(r, TraceRecord)]
        assert len(recs) == len(out) == _distinct_totals(objs), path.name  # no call twice, nothing skipped
        assert len({r.line for r in recs}) == len(recs) and all(r.billed for r in recs)
        assert recs[0].billed.cached_tokens == 3456, path.name  # warm Codex instructions (README)
        # Our prompt counts against the bill: exact on the first call (the tools
        # are inferred from it), then 4 bytes/token runs a little short.
        ours = [len(tok.encode_segments(r.segments)) for r in recs]
        assert ours[0] == pytest.approx(recs[0].billed.prompt_tokens, rel=0.005), path.name
        ratio = sum(ours) / sum(r.billed.prompt_tokens for r in recs)
        assert 0.85 < ratio < 1.02, (path.name, ratio)


def test_shared_rollouts_are_append_only_except_new_turns_and_effort(shared_traces: Path) -> None:
    pairs = kept = 0
    for path in _rollouts(shared_traces):
        objs = _objects(path)
        got = list(codex.read_calls(str(path), objs, ReaderOptions()))
        for (prev, reply), (rec, _) in zip(got, got[1:]):
            pairs += 1
            head = prev.segments + reply
            if rec.segments[: len(head)] == head:
                kept += 1
                continue
            # Allowed: a user message came between the calls (the API drops the
            # older reasoning) or the reasoning effort, at the very front, changed.
            between = [o["payload"] for n, o in objs if prev.line < n < rec.line and o["type"] == "response_item"]
            new_turn = any(p.get("role") == "user" for p in between)
            assert new_turn or rec.segments[0] != prev.segments[0], (path.name, rec.request_id)
    assert pairs >= 190 and kept / pairs > 0.9, (kept, pairs)
