"""Claude Code transcripts: calls by requestId, prompts from parentUuid chains, billed usage.

Synthetic transcripts are built inline; the real ones are read from
../shared/traces/claude_code when present (the ``shared_traces`` fixture skips
otherwise).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kvcache.engine.errors import ConfigError
from kvcache.engine.traces import claude_code as cc
from kvcache.engine.traces.anthropic_render import message_body, render_block, render_request
from kvcache.engine.traces.records import BilledUsage, ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.render import END, GENERATION_PROMPT
from kvcache.engine.traces.tokenizer import load_encoder, pseudo_tokens

SID = "sess-1"
TS = "2026-02-12T16:02:25.284Z"
NO_PREFIX = ReaderOptions(assume_prefix_tokens=0)


# ------------------------------------------------------------------ helpers
def user(uuid: str, parent: str | None, content: Any, **extra: Any) -> dict:
    return {"type": "user", "uuid": uuid, "parentUuid": parent, "sessionId": SID, "isSidechain": False,
            "timestamp": TS, "message": {"role": "user", "content": content}, **extra}


def usage(inp: int = 3, read: int = 100, write: int = 200, out: int = 5) -> dict:
    return {"input_tokens": inp, "cache_read_input_tokens": read, "cache_creation_input_tokens": write,
            "output_tokens": out}


def asst(uuid: str, parent: str | None, req: str | None, blocks: list, use: dict | None = None,
         msg_id: str | None = "msg_x", **extra: Any) -> dict:
    message: dict[str, Any] = {"model": "claude-opus-4-6", "role": "assistant", "content": blocks}
    if msg_id:
        message["id"] = msg_id
    if use is not None:
        message["usage"] = use
    line = {"type": "assistant", "uuid": uuid, "parentUuid": parent, "sessionId": SID, "isSidechain": False,
            "timestamp": TS, "message": message, **extra}
    if req:
        line["requestId"] = req
    return line


def progress(uuid: str, parent: str | None) -> dict:
    return {"type": "progress", "uuid": uuid, "parentUuid": parent, "sessionId": SID, "data": {"type": "hook_progress"}}


def text(s: str) -> dict:
    return {"type": "text", "text": s}


def tool_use(tid: str, name: str = "Bash", **inp: Any) -> dict:
    return {"type": "tool_use", "id": tid, "name": name, "input": inp}


def tool_result(tid: str, content: Any = "ok") -> dict:
    return {"type": "tool_result", "tool_use_id": tid, "content": content}


def read(rows: list[dict], options: ReaderOptions = NO_PREFIX, path: str = "t.jsonl"):
    out = list(cc.read_records(path, enumerate(rows, start=1), options))
    return [r for r in out if isinstance(r, TraceRecord)], [r for r in out if isinstance(r, SkippedLine)]


def read_file(path: Path, options: ReaderOptions | None = None):
    objects = [(n, json.loads(t)) for n, t in enumerate(path.read_text().splitlines(), start=1) if t.strip()]
    out = list(cc.read_records(str(path), objects, options or ReaderOptions()))
    return [r for r in out if isinstance(r, TraceRecord)], [r for r in out if isinstance(r, SkippedLine)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# One call written as three lines that repeat usage (the last carries the final
# output count), a tool result, then a second call; plus lines to ignore.
TWO_CALLS = [
    {"type": "file-history-snapshot", "messageId": "u0", "snapshot": {}, "isSnapshotUpdate": False},
    progress("p0", None),
    user("u0", "p0", "hi"),
    asst("a1", "u0", "req_1", [text("Let me look.")], usage(out=2)),
    asst("a2", "a1", "req_1", [{"type": "thinking", "thinking": "hmm", "signature": "sig"}], usage(out=2)),
    asst("a3", "a2", "req_1", [tool_use("t1", command="ls")], usage(out=9)),
    progress("p1", "a3"),
    {"type": "queue-operation", "operation": "enqueue", "sessionId": SID, "timestamp": TS},
    user("r1", "a3", [tool_result("t1", "a.txt")]),
    asst("b1", "r1", "req_2", [text("Done.")], usage(1, 303, 40, 3), msg_id="msg_y"),
]


# ------------------------------------------------------------------ synthetic
def test_calls_are_deduplicated_by_request_id() -> None:
    recs, skipped = read(TWO_CALLS)
    assert skipped == []  # snapshot, progress and queue-operation lines are ignored by rule
    assert [(r.request_id, r.line) for r in recs] == [("req_1", 4), ("req_2", 10)]
    first, second = recs
    # usage repeated on three lines is billed once; output is the largest streaming count
    assert first.billed == BilledUsage(prompt_tokens=303, cached_tokens=100, cache_write_tokens=200)
    assert first.output_length == 9
    assert second.billed == BilledUsage(prompt_tokens=344, cached_tokens=303, cache_write_tokens=40)
    assert first.model == "claude-opus-4-6" and first.org is None and first.path == "t.jsonl"
    assert first.session_id == SID
    assert first.arrival == datetime(2026, 2, 12, 16, 2, 25, 284000, tzinfo=timezone.utc).timestamp()


def test_prompts_are_rebuilt_from_the_chain_and_grow_append_only() -> None:
    first, second = read(TWO_CALLS)[0]
    assert first.segments == ["<|user|>\n", "hi" + END, GENERATION_PROMPT]
    # the three lines of req_1 are one assistant message, rendered as the reply
    assert first.output_text == "Let me look.<|thinking|>\nhmm\n<|tool_call|>t1 Bash\n{\"command\": \"ls\"}\n" + END
    assert second.segments == first.segments + [first.output_text, "<|user|>\n",
                                                 "<|tool_result|>t1\na.txt\n" + END, GENERATION_PROMPT]


def test_each_branch_sees_only_its_own_chain() -> None:
    # u0 -> a1 (call A) has two children: "left" (-> call B) and, after a rewind, "right" (-> call C)
    rows = [user("u0", None, "q"), asst("a1", "u0", "req_A", [text("A")], usage()),
            user("uL", "a1", "left"), asst("b1", "uL", "req_B", [text("B")], usage()),
            user("uR", "a1", "right"), asst("c1", "uR", "req_C", [text("C")], usage())]
    a, b, c = read(rows)[0]
    assert b.segments == a.segments + [a.output_text, "<|user|>\n", "left" + END, GENERATION_PROMPT]
    assert c.segments == a.segments + [a.output_text, "<|user|>\n", "right" + END, GENERATION_PROMPT]
    assert not any("left" in s or "B" + END == s for s in c.segments)


def test_parallel_tool_calls_on_side_branches_are_gathered() -> None:
    # Claude Code links the second tool_use to the first and each result to its
    # own tool_use; the next call's parent chain passes only through t1's result.
    rows = [user("u0", None, "go"),
            asst("a1", "u0", "req_A", [tool_use("t1", command="one")], usage()),
            asst("a2", "a1", "req_A", [tool_use("t2", command="two")], usage()),
            user("r2", "a2", [tool_result("t2", "two done")]),
            user("r1", "a1", [tool_result("t1", "one done")]),
            asst("b1", "r1", "req_B", [text("ok")], usage())]
    a, b = read(rows)[0]
    results = "<|tool_result|>t2\ntwo done\n<|tool_result|>t1\none done\n" + END  # in file order
    assert b.segments == a.segments + [a.output_text, "<|user|>\n", results, GENERATION_PROMPT]
    assert "t2 Bash" in a.output_text


def test_cache_ttl_comes_from_the_write_split_and_carries_over_reads() -> None:
    def split(m5: int, h1: int) -> dict:
        return usage() | {"cache_creation": {"ephemeral_5m_input_tokens": m5, "ephemeral_1h_input_tokens": h1}}

    rows = [user("u0", None, "q"), asst("a1", "u0", "req_1", [text("a")], usage()),  # no split: unknown
            user("u1", "a1", "q"), asst("b1", "u1", "req_2", [text("b")], split(0, 50)),
            user("u2", "b1", "q"), asst("c1", "u2", "req_3", [text("c")], split(0, 0)),  # a pure read keeps 1h
            user("u3", "c1", "q"), asst("d1", "u3", "req_4", [text("d")], split(40, 0))]
    assert [r.cache_ttl for r in read(rows)[0]] == [None, "1h", "1h", "5m"]


def test_missing_usage_gives_no_bill() -> None:
    rows = [user("u0", None, "hi"), asst("a1", "u0", "req_1", [text("x")], use=None)]
    (rec,), skipped = read(rows)
    assert skipped == [] and rec.billed is None and rec.output_length is None


def test_assistant_line_without_request_or_message_id_is_skipped() -> None:
    rows = [user("u0", None, "hi"),
            asst("a1", "u0", None, [text("lost")], usage(), msg_id=None),
            asst("a2", "u0", None, [text("kept")], usage(), msg_id="msg_only")]
    recs, skipped = read(rows, path="x.jsonl")
    assert [r.request_id for r in recs] == ["msg_only"]  # message.id stands in for requestId
    assert [(s.line, s.path) for s in skipped] == [(2, "x.jsonl")]
    assert "requestId" in skipped[0].reason


def test_odd_lines_are_reported_or_ignored_by_rule() -> None:
    rows = [user("u0", None, "hi"),
            {"type": "mystery", "uuid": "m0", "parentUuid": "u0"},
            {"type": "user", "uuid": "u1", "parentUuid": "m0", "message": {"role": "user"}},
            user("u0", None, "written twice"),
            {"type": ["list"]},
            {"type": "system", "subtype": "turn_duration", "uuid": "s0", "parentUuid": "m0"},
            {"type": "assistant", "uuid": "e1", "parentUuid": "s0", "isApiErrorMessage": True,
             "message": {"model": "<synthetic>", "role": "assistant", "content": [text("API Error")]}},
            asst("a1", "e1", "req_1", [text("x")], usage())]
    recs, skipped = read(rows)
    assert [s.line for s in skipped] == [2, 3, 4, 5]
    assert "mystery" in skipped[0].reason and "message.content" in skipped[1].reason
    assert "uuid of line 1" in skipped[2].reason
    # the unknown line still links the chain; the synthetic note is neither a call nor sent
    (rec,) = recs
    assert rec.segments == ["<|user|>\n", "hi" + END, GENERATION_PROMPT]


def test_tool_round_trip_renders_deterministically() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "Edit", "input": {"b": 1, "a": [2, "é"]},
           "cache_control": {"type": "ephemeral"}}
    res = {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
           "content": [text("failed"), {"type": "image", "source": {}}]}
    assert render_block(use) == '<|tool_call|>toolu_1 Edit\n{"b": 1, "a": [2, "é"]}\n'  # keys as given
    assert render_block(res) == "<|tool_result|>toolu_1 error\nfailed<image>\n"
    reordered = dict(use, input={"a": [2, "é"], "b": 1})
    assert render_block(reordered) != render_block(use)  # a client reordering keys breaks the cache
    segs = render_request([{"name": "Edit", "cache_control": {"type": "ephemeral"}}], "sys",
                          [{"role": "assistant", "content": [use]}, {"role": "user", "content": [res]}])
    assert segs == ['<|tools|>\n[{"name": "Edit"}]\n' + END, "<|system|>\nsys" + END,
                    "<|assistant|>\n", message_body([use]), "<|user|>\n", message_body([res]), GENERATION_PROMPT]
    assert segs == render_request([{"name": "Edit"}], [text("sys")],
                                  [{"role": "assistant", "content": [use]}, {"role": "user", "content": [res]}])


def test_prefix_is_inferred_from_the_first_call_and_can_be_overridden() -> None:
    recs, _ = read(TWO_CALLS, ReaderOptions())
    encode = load_encoder("cl100k_base")
    visible = sum(len(encode(s)) for s in ["<|user|>\n", "hi" + END, GENERATION_PROMPT])
    n = 303 - visible  # billed input + read + write of the first call, less what the file shows
    assert all(r.segments[0] == pseudo_tokens(cc.PREFIX_KEY, n) for r in recs)  # one N per file
    recs, _ = read(TWO_CALLS, ReaderOptions(assume_prefix_tokens=7))
    assert all(r.segments[0] == pseudo_tokens(cc.PREFIX_KEY, 7) for r in recs)
    # a first call billed for less than its visible text infers no prefix at all
    rows = [user("u0", None, "hi " * 50), asst("a1", "u0", "req_1", [text("x")], usage(1, 0, 0))]
    assert read(rows, ReaderOptions())[0][0].segments[0] == "<|user|>\n"
    with pytest.raises(ConfigError):
        read(rows, ReaderOptions(assume_prefix_tokens=-1))


def test_sidechains_and_subagent_files_are_sessions_of_their_own(tmp_path: Path) -> None:
    side = {"isSidechain": True}
    rows = [user("u0", None, "main"), asst("a1", "u0", "req_1", [text("m")], usage()),
            user("s0", None, "task", **side, agentId="ab12"),
            asst("s1", "s0", "req_2", [text("s")], usage(), **side, agentId="ab12"),
            user("q0", None, "old task", **side), asst("q1", "q0", "req_3", [text("q")], usage(), **side)]
    # a sidechain is named by its agentId, an old-style one without it by its root line
    assert [r.session_id for r in read(rows)[0]] == [SID, f"{SID}/agent-ab12", f"{SID}/sidechain/q0"]
    sub = write_jsonl(tmp_path / SID / "subagents" / "agent-zz9.jsonl", rows[2:4])
    assert [r.session_id for r in read_file(sub)[0]] == [f"{SID}/agent-zz9"]


def test_a_subagent_that_resends_the_parent_conversation_continues_into_its_file(tmp_path: Path) -> None:
    main = write_jsonl(tmp_path / f"{SID}.jsonl", TWO_CALLS)
    compact = [user("c0", "b1", "Summarise the conversation.", isSidechain=True, agentId="acompact-1"),
               asst("c1", "c0", "req_c", [text("Summary")], usage(3, 344, 20), isSidechain=True, agentId="acompact-1")]
    sub = write_jsonl(tmp_path / SID / "subagents" / "agent-acompact-1.jsonl", compact)
    (m1, m2), _ = read_file(main)
    (c,), skipped = read_file(sub)
    assert skipped == []
    assert c.segments == m2.segments + [m2.output_text, "<|user|>\n", "Summarise the conversation." + END,
                                        GENERATION_PROMPT]  # same prefix N as the parent file, too
    main.unlink()  # without the parent file the chain ends at the subagent's first line
    (alone,), _ = read_file(sub, NO_PREFIX)
    assert alone.segments == ["<|user|>\n", "Summarise the conversation." + END, GENERATION_PROMPT]


def test_looks_like_claude_code_lines_only() -> None:
    summary = {"type": "summary", "summary": "s", "leafUuid": "x"}
    for first in (TWO_CALLS[0], TWO_CALLS[1], TWO_CALLS[2], TWO_CALLS[7], summary):
        assert cc.looks_like(first), first
    for other in ({"messages": [], "model": "m"}, {"hash_ids": [1], "input_length": 3},
                  {"type": "session_meta", "payload": {}}, {"type": "user", "content": "no links"}, {"type": ["x"]}):
        assert not cc.looks_like(other), other


# ------------------------------------------------------------------ real transcripts
MAIN = "4d5611e5-241a-462a-8d15-5122611a9569"


def test_real_session_calls_and_billed_read_share(shared_traces: Path) -> None:
    path = shared_traces / "claude_code" / f"{MAIN}.jsonl"
    recs, skipped = read_file(path)
    assert skipped == []
    request_ids = {json.loads(t).get("requestId") for t in path.read_text().splitlines()} - {None}
    assert len(recs) == len(request_ids) == 139
    assert len({r.request_id for r in recs}) == len(recs)  # no call counted twice
    billed = [r.billed for r in recs]
    assert all(b is not None for b in billed)
    share = sum(b.cached_tokens for b in billed) / sum(b.prompt_tokens for b in billed)  # type: ignore[union-attr]
    assert share == pytest.approx(0.9603, abs=1e-4)
    assert {r.session_id for r in recs} == {MAIN}
    assert {r.cache_ttl for r in recs} == {"5m"}  # the session wrote 5-minute entries only
    # the README's "about 26k prefix tokens" the file does not contain
    assert 24_000 <= len(recs[0].segments[0]) <= 28_000


def test_real_session_history_is_append_only_except_at_compaction(shared_traces: Path) -> None:
    path = shared_traces / "claude_code" / f"{MAIN}.jsonl"
    recs, _ = read_file(path)
    breaks = [(a.line, b.line) for a, b in zip(recs, recs[1:])
              if b.segments[: len(a.segments) + 1] != a.segments + [a.output_text]]
    # The only break: auto-compaction at line 754 replaces the history with a summary.
    assert breaks == [(742, 760)]
    boundary = json.loads(path.read_text().splitlines()[753])
    assert boundary["subtype"] == "compact_boundary" and boundary["parentUuid"] is None


def test_real_subagent_files(shared_traces: Path) -> None:
    sub = shared_traces / "claude_code" / MAIN / "subagents"
    explore, s1 = read_file(sub / "agent-a2898e3.jsonl")
    compact, s2 = read_file(sub / "agent-acompact-e1f845.jsonl")
    assert s1 == s2 == []
    assert {r.session_id for r in explore} == {f"{MAIN}/agent-a2898e3"} and len(explore) == 12
    assert [r.session_id for r in compact] == [f"{MAIN}/agent-acompact-e1f845"]
    assert all(b.segments[: len(a.segments) + 1] == a.segments + [a.output_text] for a, b in zip(explore, explore[1:]))
    # The compaction agent resends the parent conversation: its prompt extends the
    # parent's last call before compaction (billed: it read exactly that call's prompt).
    main, _ = read_file(shared_traces / "claude_code" / f"{MAIN}.jsonl")
    last = next(r for r in main if r.line == 742)
    assert compact[0].segments[: len(last.segments) + 1] == last.segments + [last.output_text]
    assert compact[0].billed and last.billed
    assert compact[0].billed.cached_tokens == last.billed.cached_tokens + (last.billed.cache_write_tokens or 0)


@pytest.mark.parametrize("name, calls", [("short.jsonl", 1), ("subagent.jsonl", 12), ("tool_heavy.jsonl", 4)])
def test_real_small_transcripts_parse_cleanly(shared_traces: Path, name: str, calls: int) -> None:
    recs, skipped = read_file(shared_traces / "claude_code" / name)
    assert skipped == [] and len(recs) == calls
    assert all(r.billed is not None and r.segments and r.output_text for r in recs)
    assert all(b.segments[: len(a.segments) + 1] == a.segments + [a.output_text] for a, b in zip(recs, recs[1:]))
