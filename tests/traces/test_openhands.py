"""OpenHands event trajectories: calls, rebuilt prompts, bills, bad events, the CLI.

The real trajectories are read from ../shared/traces/openhands when present
(the ``shared_traces`` fixture skips otherwise); everything else is synthetic.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app
from kvcache.engine.traces import openhands as oh
from kvcache.engine.traces.detect import detect_format
from kvcache.engine.traces.logs import first_object
from kvcache.engine.traces.records import BilledUsage, ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.render import END, GENERATION_PROMPT
from kvcache.engine.traces.tokenizer import SegmentTokenizer, pseudo_tokens

runner = CliRunner()

# ---------------------------------------------------------------- event builders


def event(i: int, source: str, second: int = 0, **fields: Any) -> dict[str, Any]:
    return {"id": i, "timestamp": f"2025-01-27T22:45:{second:02d}.500000", "source": source, **fields}


def user(i: int, text: str) -> dict:
    return event(i, "user", action="message", args={"content": text, "image_urls": None})


def response(rid: str | None, content: str | None, calls: list[dict], prompt: int | None = None,
             cached: int = 0, model: str = "gpt-4o-2024-08-06") -> dict:
    usage = None if prompt is None else {"prompt_tokens": prompt, "completion_tokens": 7,
                                         "prompt_tokens_details": {"cached_tokens": cached}}
    msg = {"role": "assistant", "content": content, "tool_calls": calls}
    return {"id": rid, "model": model, "choices": [{"index": 0, "message": msg}], "usage": usage}


def tool_call(cid: str, name: str = "execute_bash", args: str = '{"command": "ls"}') -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def act(i: int, kind: str, resp: dict, cid: str, second: int = 0, **args: Any) -> dict:
    meta = {"function_name": "execute_bash", "tool_call_id": cid, "model_response": resp, "total_calls_in_response": 1}
    return event(i, "agent", second, action=kind, tool_call_metadata=meta, args=args)


def obs(i: int, cid: str | None, text: str, kind: str = "run", resp: dict | None = None) -> dict:
    meta = None if cid is None else {"function_name": "execute_bash", "tool_call_id": cid, "model_response": resp}
    return event(i, "agent", observation=kind, content=text, tool_call_metadata=meta, extras={})


def read(events: list[Any], options: ReaderOptions | None = None, path: str = "traj.json") -> list:
    return list(oh.read_records(path, [(1, {"document": events})], options or ReaderOptions()))


def calls(events: list[Any], **kw: Any) -> list[TraceRecord]:
    out = read(events, **kw)
    assert not [r for r in out if isinstance(r, SkippedLine)], out
    return out


def tool_turn() -> list[dict]:
    """A user asks, call A runs a tool, call B answers and finishes."""
    a = response("resp-A", "Let me look.", [tool_call("c1")], prompt=3000, cached=0)
    b = response("resp-B", "Done.", [tool_call("c2", "finish", "{}")], prompt=3100, cached=2944)
    return [user(0, "list the files"), act(1, "run", a, "c1", 5, command="ls"),
            obs(2, "c1", "a.py\nb.py", resp=a), act(3, "finish", b, "c2", 9, thought="Done.", outputs={})]


# ---------------------------------------------------------------- synthetic documents


def test_looks_like_event_lists_only() -> None:
    assert oh.looks_like({"document": tool_turn()})
    assert oh.looks_like(user(0, "hi"))  # one event (a JSONL of events)
    assert not oh.looks_like({"document": [{"foo": 1}]})
    assert not oh.looks_like({"document": []})
    assert not oh.looks_like({"history": [], "trajectory": []})
    assert not oh.looks_like({"type": "session_meta", "payload": {}})


def test_prompt_is_the_history_and_the_reply_is_what_the_next_call_carries() -> None:
    first, second = calls(tool_turn(), options=ReaderOptions(assume_prefix_tokens=0))
    reply_a = "Let me look.<|tool_call|>c1 execute_bash\n{\"command\": \"ls\"}\n" + END
    assert first.segments == ["<|user|>\n", "list the files" + END, GENERATION_PROMPT]
    assert first.output_segments == [reply_a]
    # Call B: call A's prompt, its reply (the assistant header is the generation prompt), the tool result.
    assert second.segments == [*first.segments, reply_a, "<|tool|>c1\n", "a.py\nb.py" + END, GENERATION_PROMPT]
    # finish is sent back as plain assistant text (its thought), as OpenHands does.
    assert second.output_segments == ["Done." + END]
    assert (first.request_id, second.request_id) == ("resp-A", "resp-B")
    assert first.session_id == "traj" and first.model == "gpt-4o-2024-08-06"
    assert first.arrival == datetime(2025, 1, 27, 22, 45, 5, 500000, tzinfo=timezone.utc).timestamp()
    assert second.billed == BilledUsage(3100, 2944) and second.output_length == 7


def test_parallel_tool_calls_are_one_call_placed_when_every_result_is_in() -> None:
    r = response("resp-P", "", [tool_call("c1"), tool_call("c2")], prompt=500)
    last = response("resp-Q", "ok", [], prompt=600)
    events = [user(0, "go"), act(1, "run", r, "c1", 3, command="ls"), obs(2, "c1", "x.py", resp=r),
              act(3, "run", r, "c2", 4, command="pwd"), obs(4, "c2", "/w", resp=r),
              event(5, "agent", action="message", args={"content": "ok"},
                    tool_call_metadata={"tool_call_id": "", "model_response": last})]
    recs = calls(events, options=ReaderOptions(assume_prefix_tokens=0))
    assert [x.request_id for x in recs] == ["resp-P", "resp-Q"]  # not one call per action or observation
    assert recs[0].arrival == datetime(2025, 1, 27, 22, 45, 3, 500000, tzinfo=timezone.utc).timestamp()  # its first event
    body = recs[0].output_segments[0]
    assert body.startswith("<|tool_call|>c1 ") and "<|tool_call|>c2 " in body  # blank content is left out
    # Results follow the assistant message in tool-call order, not in arrival order.
    assert recs[1].segments[-6:] == [body, "<|tool|>c1\n", "x.py" + END, "<|tool|>c2\n", "/w" + END, GENERATION_PROMPT]
    swapped = [*events[:1], events[1], events[3], events[4], events[2], events[5]]  # results arrive c2, c1
    assert calls(swapped, options=ReaderOptions(assume_prefix_tokens=0))[1].segments == recs[1].segments


def test_an_agent_message_without_a_response_is_an_unbilled_call() -> None:
    events = [user(0, "what's 1+1?"), event(1, "agent", 2, action="message", args={"content": "2."}),
              user(2, "finish please"), act(3, "finish", response("resp-F", None, [tool_call("f", "finish", "{}")],
                                                                   prompt=900, cached=0), "f", 4, thought="")]
    first, second = calls(events)
    assert first.request_id == "traj/1" and first.billed is None
    assert first.model == "gpt-4o-2024-08-06"  # the file's model
    assert first.output_segments == ["2." + END]
    assert second.segments[1:-1] == [*first.segments[1:-1], "<|assistant|>\n", "2." + END, "<|user|>\n", "finish please" + END]
    assert second.request_id == "resp-F" and second.billed == BilledUsage(900, 0)


def test_naive_timestamps_are_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # a naive local reading would be 5 h off
    time.tzset()
    try:
        arrival = calls(tool_turn())[0].arrival
    finally:
        monkeypatch.undo()
        time.tzset()
    assert arrival == datetime(2025, 1, 27, 22, 45, 5, 500000, tzinfo=timezone.utc).timestamp()


def test_missing_system_prompt_is_a_pseudo_prefix_sized_by_the_first_bill() -> None:
    recs = calls(tool_turn())
    tok = SegmentTokenizer("o200k_base")  # gpt-4o's vocabulary
    visible = len(tok.encode_segments(recs[0].segments[1:]))
    n = 3000 - visible
    assert recs[0].segments[0] == pseudo_tokens(f"{oh.PREFIX_KEY}/gpt-4o-2024-08-06", n)
    assert recs[1].segments[0] == recs[0].segments[0]  # one prefix per file
    assert calls(tool_turn(), options=ReaderOptions(assume_prefix_tokens=7))[0].segments[0] == \
        pseudo_tokens(f"{oh.PREFIX_KEY}/gpt-4o-2024-08-06", 7)


def test_a_system_action_is_the_prefix_with_its_tools() -> None:
    tools = [{"type": "function", "function": {"name": "execute_bash"}}]
    system = event(0, "agent", action="system", args={"content": "You are OpenHands.", "tools": tools})
    first = calls([system, *tool_turn()])[0]
    assert first.segments[:2] == ["<|tools|>\n" + json.dumps(tools) + "\n" + END, "<|system|>\nYou are OpenHands." + END]
    assert not [s for s in first.segments if isinstance(s, tuple)]  # nothing inferred


def test_cached_tokens_fall_back_to_litellm_anthropic_keys() -> None:
    r = response("resp-C", "hi", [tool_call("c1")], model="claude-3-5-sonnet-20241022")
    r["usage"] = {"prompt_tokens": 4646, "cache_read_input_tokens": 3482, "cache_creation_input_tokens": 1158}
    assert calls([user(0, "x"), act(1, "run", r, "c1", command="ls")])[0].billed == BilledUsage(4646, 3482, 1158)


def test_bad_events_are_skipped_lines_and_the_rest_is_read() -> None:
    bad_usage = response("resp-U", "x", [tool_call("c9")])
    bad_usage["usage"] = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}
    events = [*tool_turn(), 5, {"source": "agent"},
              event(6, "agent", action="run", args={"command": "ls"}),             # no model_response
              event(7, "user", action="message", args={"content": ["not text"]}),
              act(8, "run", {"id": "r", "choices": []}, "c8"),
              act(9, "run", bad_usage, "c9", command="ls")]
    out = read(events, path="t.json")
    skipped = [s for s in out if isinstance(s, SkippedLine)]
    assert [s.reason.split(":")[0] for s in skipped] == \
        ["call 3", "events[4]", "events[5]", "events[6]", "events[7]", "events[8]"]
    assert "needs tool_call_metadata.model_response" in skipped[3].reason
    assert all(s.line == 1 and s.path == "t.json" for s in skipped)
    recs = [r for r in out if isinstance(r, TraceRecord)]
    assert [r.request_id for r in recs] == ["resp-A", "resp-B", "resp-U"] and recs[2].billed is None


# ---------------------------------------------------------------- the shared real trajectories


def _real(shared: Path, name: str) -> tuple[list[TraceRecord], list[SkippedLine]]:
    path = shared / "openhands" / name
    out = list(oh.read_records(str(path), [(1, first_object(str(path), False, []))], ReaderOptions()))
    return [r for r in out if isinstance(r, TraceRecord)], [r for r in out if isinstance(r, SkippedLine)]


def _assert_append_only(recs: list[TraceRecord]) -> None:
    for a, b in zip(recs, recs[1:]):
        carried = [*a.segments, *a.output_segments]  # type: ignore[misc]
        assert b.segments[: len(carried)] == carried, (a.request_id, b.request_id)


def test_shared_basic_interactions_billed_figures(shared_traces: Path) -> None:
    recs, skipped = _real(shared_traces, "basic_interactions.json")
    assert not skipped
    # Two agent replies logged without their response, then the one gpt-4o call with usage.
    assert [r.billed for r in recs] == [None, None, BilledUsage(prompt_tokens=2473, cached_tokens=2304)]
    assert recs[2].request_id == "chatcmpl-Aw30O6Ka8n1X3F6F7YUh91NxXBE0y"
    assert {r.model for r in recs} == {"gpt-4o-2024-08-06"}
    _assert_append_only(recs)


def test_shared_basic_calls_and_bills(shared_traces: Path) -> None:
    recs, skipped = _real(shared_traces, "basic.json")
    assert not skipped
    # Three events carry the first response (action + observation): one call.
    assert [(r.request_id, r.billed) for r in recs] == [
        ("chatcmpl-6814daca-5c62-431d-8c88-9dafead244f1", BilledUsage(3486, 0, 3482)),
        ("chatcmpl-27cc0ad9-6b86-4f1f-9f72-d9c7ab2282f7", BilledUsage(4646, 3482, 1158)),
    ]
    _assert_append_only(recs)
    # The edit's result is its short tool output, not the whole-file diff the event keeps.
    assert "<|tool|>toolu_017nBp7UfiGqyrA7j77HgtFP\n" in recs[1].segments
    assert "File created successfully at: /workspace/game_2048.py" + END in recs[1].segments
    tok = SegmentTokenizer("cl100k_base")
    ours = len(tok.encode_segments(recs[1].segments))  # type: ignore[arg-type]
    assert abs(ours - 4646) / 4646 < 0.05  # 4559 when measured


# ---------------------------------------------------------------- the CLI


def _replay(*args: str) -> dict:
    r = runner.invoke(app, ["replay", *args, "-f", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("name, requests", [("basic.json", 2), ("basic_interactions.json", 3)])
def test_cli_replays_shared_trajectories(shared_traces: Path, name: str, requests: int) -> None:
    path = shared_traces / "openhands" / name
    assert detect_format(first_object(str(path), False, []), str(path), 1) == "openhands"
    s = _replay(str(path))["summary"]
    assert (s["input_format"], s["requests"], s["skipped_lines"]) == ("openhands", requests, 0)


def test_cli_openai_prediction_matches_the_gpt4o_bill(shared_traces: Path) -> None:
    s = _replay(str(shared_traces / "openhands" / "basic_interactions.json"), "--provider", "openai")["summary"]
    assert (s["billed_prompt_tokens"], s["billed_cached_tokens"]) == (2473, 2304)
    # The unbilled earlier calls warm the cache: within one 128-token OpenAI step (2304 measured).
    assert abs(s["predicted_vs_billed"]["predicted_cached_tokens"] - 2304) <= 128


def test_cli_reports_a_bad_event_as_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.json"
    trace.write_text(json.dumps([*tool_turn(), "oops"]))
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"kvcache: error: {trace}:1: events[4]: expected an event object")
    assert len(r.stderr.strip().splitlines()) == 1
    s = _replay(str(trace), "--skip-invalid")["summary"]
    assert (s["requests"], s["skipped_lines"]) == (2, 1)


def test_cli_unknown_document_shape(tmp_path: Path) -> None:
    trace = tmp_path / "x.json"
    trace.write_text(json.dumps([{"role": "user", "text": "hi"}]))
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"kvcache: error: {trace}:1: unknown trace format")
    assert len(r.stderr.strip().splitlines()) == 1
