"""The cross-request edit classifier: hand-made pairs, recall/precision on the synth generator, real traces.

Hand-made pairs render native requests with the project's template and use one
token per character, so positions and counts can be checked exactly.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from kvcache.analyzers.lint.classify import EditKind, RequestView, classify_pair, trace_pairs
from kvcache.analyzers.lint.classify_views import Sessions
from kvcache.analyzers.lint.rule import LintContext
from kvcache.engine.errors import TraceError
from kvcache.engine.traces.render import render_segments
from kvcache.engine.traces.synth import SynthConfig, breaker_sessions, generate, write_jsonl

K = EditKind
REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample_traces" / "agents.jsonl"
GEN = "<|assistant|>\n"
SYS = "You are Forge, a coding agent.\nBe brief."
U1 = {"role": "user", "content": "Fix the billing test."}
A1 = {"role": "assistant", "content": "Looking.", "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": '{"q": "total", "path": "src"}'}}]}
R1 = {"role": "tool", "tool_call_id": "c1", "content": '{"hits": 2, "files": ["a.py", "b.py"]}'}
A2 = {"role": "assistant", "content": "Fixed the rounding."}
U2 = {"role": "user", "content": "Thanks."}


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool."}}


TOOLS = [tool("grep"), tool("edit"), tool("run")]


def view(tools=None, system=SYS, messages=(U1,), *, segments=None, rid="r", sid="s1", arrival=0.0,
         model="m", params=None) -> RequestView:
    """A request with one token per character (tuples stay token ids)."""
    segs = segments if segments is not None else render_segments(tools, system, list(messages))
    toks = [list(s) if isinstance(s, tuple) else [ord(c) for c in s] for s in segs]
    return RequestView(rid, "t.jsonl", 1, sid, "acme", arrival, model, segs, toks, tools, params or {})


def length(segs) -> int:
    return sum(len(s) for s in segs)


# ------------------------------------------------------------------ hand-made pairs
def test_append_only_is_not_an_edit() -> None:
    prev = view(TOOLS, messages=[U1])
    cur = view(TOOLS, messages=[U1, A1, R1])
    cls = classify_pair(prev, cur)
    assert (cls.kind, cls.first_divergent_token, cls.first_divergent_segment, cls.tokens_recomputed) == (
        K.APPEND_ONLY, None, None, 0)


def test_timestamp_drift_first_token_and_recomputed_exact() -> None:
    prev = view(system="Now: 2026-11-28T09:00:00Z\nBe brief.", messages=[U1])
    cur = view(system="Now: 2026-11-28T09:00:25Z\nBe brief.", messages=[U1, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.TIMESTAMP_DRIFT
    sys_seg = prev.segments[0]  # [<|system|>...][<|user|>\n][body][<|assistant|>\n]
    d = sys_seg.index("09:00:00Z") + len("09:00:")  # "0" vs "2": the tens of seconds
    assert (cls.first_divergent_token, cls.first_divergent_segment) == (d, 0)
    # Recomputed: the system text after "00"/"25" ("Z\nBe brief.<|end|>\n"), the user turn, and the
    # generation prompt (the assistant header repeats it); the new reply and user message are not counted.
    assert cls.tokens_recomputed == len(sys_seg) - (d + 2) + length(prev.segments[1:])
    assert "'2026-11-28T09:00:00Z' -> '2026-11-28T09:00:25Z' in the system prompt" == cls.detail


def test_timestamp_line_inserted_and_other_date_formats() -> None:
    plain = view(system=SYS)
    stamped = view(system="You are Forge, a coding agent.\nToday is Nov 28, 2026.\nBe brief.")
    assert classify_pair(plain, stamped, "org").kind is K.TIMESTAMP_DRIFT
    a = view(system="Time 14:32:05 UTC. " + SYS)
    b = view(system="Time 14:33:10 UTC. " + SYS)
    assert classify_pair(a, b).kind is K.TIMESTAMP_DRIFT


def test_random_id() -> None:
    prev = view(system=SYS + "\nRequest 3f2a9c1e-8b7d-4c2a-9e1f-0a1b2c3d4e5f.")
    cur = view(system=SYS + "\nRequest 9d41c0aa-17e2-4f3b-8a90-5e6f7a8b9c0d.", messages=[U1, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.RANDOM_ID
    assert "3f2a9c1e" in cls.detail and cls.first_divergent_segment == 0


def test_reordered_tools() -> None:
    prev = view(TOOLS, messages=[U1])
    cur = view([TOOLS[2], TOOLS[0], TOOLS[1]], messages=[U1, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.REORDERED_TOOLS
    tools_seg = prev.segments[0]
    d = tools_seg.index('"grep"')  # '..."name": "' is shared, then "grep" vs "run"
    assert (cls.first_divergent_token, cls.first_divergent_segment) == (d + 1, 0)
    assert cls.detail == "the same 3 tools in another order (first moved: 'grep')"


def test_tool_set_change_names_added_and_removed() -> None:
    prev = view(TOOLS, messages=[U1])
    cur = view([TOOLS[0], TOOLS[1], tool("fetch")], messages=[U1, A2, U2])
    cls = classify_pair(prev, cur)
    assert (cls.kind, cls.detail) == (K.TOOL_SET_CHANGE, "removed 'run'; added 'fetch'")


def test_tool_keys_reordered_is_json_key_order() -> None:
    flipped = [{"function": t["function"], "type": t["type"]} for t in TOOLS]
    cls = classify_pair(view(TOOLS), view(flipped, messages=[U1, A2, U2]))
    assert cls.kind is K.JSON_KEY_ORDER


def test_json_key_order_in_history_counts_only_repeated_tokens() -> None:
    flipped_result = dict(R1, content='{"files": ["a.py", "b.py"], "hits": 2}')
    prev = view(messages=[U1, A1, R1])
    cur = view(messages=[U1, A1, flipped_result, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.JSON_KEY_ORDER and cls.others == []
    body = prev.segments[6]  # [sys][<|user|>][u][<|assistant|>][a1][<|tool|>c1][result]...
    assert body.startswith('{"hits"') and cls.first_divergent_segment == 6
    assert cls.first_divergent_token == length(prev.segments[:6]) + 2  # '{"' is shared
    # From the divergence, the result's common suffix ('2<|end|>\n' vs ']<|end|>\n': '<|end|>\n') and what
    # difflib aligns between the rest repeat, then the generation prompt (the next assistant header).
    old, new = prev.segments[6][2:], cur.segments[6][2:]
    suffix = len(os.path.commonprefix([old[::-1], new[::-1]]))
    middle = difflib.SequenceMatcher(None, old[:-suffix], new[:-suffix], autojunk=False)
    assert cls.tokens_recomputed == suffix + sum(b.size for b in middle.get_matching_blocks()) + len(GEN)


def test_whitespace_only() -> None:
    prev = view(system="You are Forge.\nBe brief.")
    cur = view(system="You are Forge.\n\nBe brief.", messages=[U1, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.WHITESPACE_ONLY
    d = prev.segments[0].index("Be brief")
    assert cls.first_divergent_token == d
    # The inserted "\n" is new; everything of the previous prompt from d on repeats.
    assert cls.tokens_recomputed == length(prev.segments) - d


def test_per_user_data_only_for_org_pairs() -> None:
    alice = view(system="You are Forge. You help Alice Smith (alice@acme.io) with billing.")
    bob = view(system="You are Forge. You help Bob Jones (bob@acme.io) with billing.")
    assert classify_pair(alice, bob, "org").kind is K.PER_USER_DATA
    assert classify_pair(alice, bob, "session").kind is K.OTHER
    other_agent = view(system="Translate every message into French, formally.")
    assert classify_pair(alice, other_agent, "org").kind is K.OTHER


def test_model_switch_loses_everything() -> None:
    prev = view(TOOLS, model="gpt-4o")
    cur = view(TOOLS, messages=[U1, A2, U2], model="gpt-4o-mini")
    cls = classify_pair(prev, cur)
    assert (cls.kind, cls.first_divergent_token, cls.first_divergent_segment) == (K.MODEL_SWITCH, 0, 0)
    assert cls.tokens_recomputed == length(prev.segments)
    assert cls.detail == "model 'gpt-4o' -> 'gpt-4o-mini'"


def test_reasoning_params_invalidate_from_the_messages() -> None:
    prev = view(TOOLS, params={"thinking": {"type": "enabled", "budget_tokens": 1024}})
    cur = view(TOOLS, messages=[U1, A2, U2], params={"thinking": {"type": "enabled", "budget_tokens": 8000}})
    cls = classify_pair(prev, cur)
    assert cls.kind is K.REASONING_PARAMS
    messages_start = length(prev.segments[:2])  # tools, system
    assert (cls.first_divergent_token, cls.first_divergent_segment) == (messages_start, 2)
    assert cls.tokens_recomputed == length(prev.segments) - messages_start
    effort = classify_pair(view(params={"reasoning_effort": "high"}), view(params={"reasoning_effort": "low"}))
    assert (effort.kind, effort.first_divergent_token) == (K.REASONING_PARAMS, 0)


def test_tool_choice_and_images() -> None:
    cls = classify_pair(view(params={"tool_choice": "auto"}),
                        view(messages=[U1, A2, U2], params={"tool_choice": "required"}))
    assert (cls.kind, cls.detail) == (K.TOOL_CHOICE_OR_IMAGES, "tool_choice 'auto' -> 'required'")
    img = {"role": "user", "content": [{"type": "text", "text": "See:"},
                                       {"type": "image_url", "image_url": {"url": "x"}}]}
    cls = classify_pair(view(messages=[img]), view(messages=[{"role": "user", "content": "See:"}, A2, U2]))
    assert cls.kind is K.TOOL_CHOICE_OR_IMAGES and "images 1 -> 0" in cls.detail


def test_history_rewritten_mid_history() -> None:
    cut = dict(R1, content="ZZZ")  # no character in common with the result it replaces
    prev = view(messages=[U1, A1, R1, A2, U2])
    cur = view(messages=[U1, A1, cut, A2, U2, A2, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.HISTORY_REWRITTEN and cls.detail == "message 3 (tool) rewritten"
    # Repeated: everything after the rewritten result (A2, U2 and the generation prompt) plus the
    # result's shared "<|end|>\n" tail; "ZZZ" is new.
    after = length(prev.segments[7:])
    assert cls.tokens_recomputed == after + len("<|end|>\n")


def test_history_truncated() -> None:
    a3 = {"role": "assistant", "content": "Done."}
    prev = view(messages=[U1, A1, R1, A2, U2])
    cur = view(messages=[U1, A2, U2, a3, U2])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.HISTORY_TRUNCATED and cls.detail.startswith("2 message(s) dropped")
    # The prompts part where A1's body was; A2, U2 and the generation prompt repeat.
    assert cls.first_divergent_segment == 4
    assert cls.tokens_recomputed == length(prev.segments[8:])


def test_reasoning_stripped_thinking_block() -> None:
    sys_seg, uh, u1 = "<|system|>\nBe brief.<|end|>\n", "<|user|>\n", "Fix it.<|end|>\n"
    thought = "<|thinking|>\nCheck rounding.\n<|tool_call|>t1 grep\n{}\n<|end|>\n"
    prev = view(segments=[sys_seg, uh, u1, GEN, thought, uh, "ok<|end|>\n", GEN])
    cur = view(segments=[sys_seg, uh, u1, GEN, "<|tool_call|>t1 grep\n{}\n<|end|>\n", uh, "ok<|end|>\n", GEN, "x", GEN])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.REASONING_STRIPPED
    assert cls.first_divergent_token == length(prev.segments[:4]) + len("<|t")  # "<|thinking" vs "<|tool_call"


def test_reasoning_stripped_encrypted_item() -> None:
    # Responses/Codex layout: a reasoning item is [<|assistant|>\n, pseudo tokens, <|end|>\n].
    head = ["<|developer|>\n", "Be brief.<|end|>\n", "<|user|>\n", "Fix it.<|end|>\n"]
    item = [GEN, (7, 7, 7, 7), "<|end|>\n"]
    call = [GEN, "<|tool_call|>grep\n{}\n<|end|>\n", "<|tool|>\n", "ok<|end|>\n"]
    prev = view(segments=[*head, *item, *call, GEN])
    cur = view(segments=[*head, *call, "<|user|>\n", "more<|end|>\n", GEN])
    cls = classify_pair(prev, cur)
    assert cls.kind is K.REASONING_STRIPPED
    assert cls.tokens_recomputed == length(call)


def test_ttl_gap_needs_a_ttl() -> None:
    prev = view(TOOLS, arrival=0.0)
    cur = view(TOOLS, messages=[U1, A2, U2], arrival=400.0)
    assert classify_pair(prev, cur).kind is K.APPEND_ONLY
    cls = classify_pair(prev, cur, ttl=300.0)
    assert (cls.kind, cls.first_divergent_token, cls.tokens_recomputed) == (K.TTL_GAP, 0, length(prev.segments))
    assert cls.detail == "6m40s between requests, longer than the 5m00s cache TTL"
    both = classify_pair(prev, view(TOOLS[:2], messages=[U1, A2, U2], arrival=400.0), ttl=300.0)
    assert both.kind is K.TOOL_SET_CHANGE and both.others == [K.TTL_GAP]


def test_other_and_generation_prompt_tolerance() -> None:
    prev = view(system="Answer in English.")
    assert classify_pair(prev, view(system="Answer in Klingon, always.")).kind is K.OTHER
    # A turn that follows the prompt with a user message instead of the reply keeps all the cache.
    follow = view(segments=[*prev.segments[:-1], "<|user|>\n", "Hello?<|end|>\n", GEN])
    assert classify_pair(prev, follow).kind is K.APPEND_ONLY


# ------------------------------------------------------------------ trace_pairs
def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _native(rid: str, sid: str, messages: list, **kw) -> dict:
    return {"request_id": rid, "session_id": sid, "org": "acme", "arrival": kw.pop("arrival", 0.0),
            "model": "gpt-4o", "tools": kw.pop("tools", TOOLS), "system": kw.pop("system", SYS),
            "messages": messages, **kw}


def test_trace_pairs_on_text_builds_views_and_names_the_path() -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    text = _lines(_native("t1", "s1", [U1], tool_choice="auto", thinking=thinking),
                  _native("t2", "s1", [U1, A1, R1], tools=TOOLS[:2], arrival=5.0, tool_choice="auto",
                          thinking=thinking))
    (pair,) = trace_pairs("mine.jsonl", LintContext(), text=text)
    assert pair.relation == "session" and pair.classification.kind is K.TOOL_SET_CHANGE
    assert (pair.prev.request_id, pair.cur.request_id, pair.cur.line, pair.cur.path) == ("t1", "t2", 2, "mine.jsonl")
    assert pair.cur.tools == TOOLS[:2] and pair.cur.model == "gpt-4o" and pair.cur.arrival == 5.0
    assert pair.cur.params == {"tool_choice": "auto", "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert len(pair.cur.segment_tokens) == len(pair.cur.segments) and all(pair.cur.segment_tokens)
    with pytest.raises(TraceError, match=r"^mine\.jsonl:3: "):
        list(trace_pairs("mine.jsonl", LintContext(), text=text + "{not json}\n"))


def test_org_pairs_compare_session_starts_with_the_most_common_prefix() -> None:
    text = _lines(
        _native("a0", "a", [U1], arrival=0.0),
        _native("b0", "b", [U1], arrival=1.0),
        _native("c0", "c", [U1], arrival=2.0, system="Now: 2026-11-28T09:00:02Z\n" + SYS),
        _native("d0", "d", [U1], arrival=3.0),
        _native("d1", "d", [U1, A2, U2], arrival=4.0),
    )
    pairs = list(trace_pairs("t.jsonl", LintContext(), text=text))
    assert [(p.relation, p.prev.request_id, p.cur.request_id, p.classification.kind) for p in pairs] == [
        ("org", "a0", "c0", K.TIMESTAMP_DRIFT)]


def test_sessions_are_bounded() -> None:
    table = Sessions(limit=2)
    for sid in ("a", "b", "c"):
        table.swap(view(sid=sid))
    assert table.swap(view(sid="a")) == (None, True)  # "a" was forgotten
    assert table.swap(view(sid="c"))[1] is False


# ------------------------------------------------------------------ recall and precision on the generator
BREAKER_KIND = {"timestamp": {K.TIMESTAMP_DRIFT}, "tool_order": {K.REORDERED_TOOLS}, "json_keys": {K.JSON_KEY_ORDER},
                "truncation": {K.HISTORY_TRUNCATED, K.HISTORY_REWRITTEN}}


@pytest.mark.parametrize("seed", [0, 10, 3])
def test_recall_and_precision_on_synth(tmp_path: Path, seed: int) -> None:
    config = SynthConfig(seed=seed, orgs=3, users_per_org=3, sessions_per_user=2, min_turns=3, max_turns=6,
                         system_words=(100, 200), tools_per_org=(3, 6), breaker_rate=0.45)
    path = tmp_path / "synth.jsonl"
    write_jsonl(generate(config), path)
    breakers = breaker_sessions(config)
    assert {k for k, _ in breakers.values()} == set(BREAKER_KIND)
    pairs = list(trace_pairs(str(path), LintContext()))
    by_request = {}
    for p in pairs:
        by_request.setdefault(p.cur.request_id, []).append(p)
    for sid, (kind, turn) in breakers.items():
        rid = f"{sid}-t{turn}"
        found = [p for p in pairs if rid in (p.cur.request_id, p.prev.request_id)]
        if turn == 0:  # the first request: only an org pair can show it (against, or as, the reference)
            found = [p for p in found if p.relation == "org"]
        else:
            found = [p for p in by_request.get(rid, []) if p.relation == "session"]
        assert found, f"{sid}: no pair at turn {turn} for {kind}"
        assert all(p.classification.kind in BREAKER_KIND[kind] for p in found), (sid, kind, found[0].classification)
    # Precision: sessions without a breaker only append; turns before a breaker too.
    for p in pairs:
        sid = p.cur.session_id
        if p.relation == "session":
            assert sid in breakers, (p.cur.request_id, p.classification)
            assert int(p.cur.request_id.rsplit("-t", 1)[1]) >= breakers[sid][1]
        else:  # an org pair always involves a timestamp session (the only breaker in the prefix at turn 0)
            assert {p.prev.session_id, sid} & {s for s, (k, _) in breakers.items() if k == "timestamp"}


def test_sample_trace_is_fast_and_finds_the_documented_breakers() -> None:
    start = time.perf_counter()
    pairs = list(trace_pairs(str(SAMPLE), LintContext()))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s on the 215-request sample"
    config = SynthConfig(seed=10, orgs=3, users_per_org=5, sessions_per_user=3, min_turns=3, max_turns=6,
                         system_words=(200, 300), tools_per_org=(5, 6), breaker_rate=0.15)
    sessions = {p.cur.session_id for p in pairs if p.relation == "session"}
    assert sessions == set(breaker_sessions(config))


def test_hash_id_and_token_id_traces() -> None:
    pairs = list(trace_pairs(str(REPO / "sample_traces" / "agents_hash_ids.jsonl"), LintContext()))
    assert pairs and all(p.relation == "session" for p in pairs)
    assert {p.cur.session_id for p in pairs} <= set(breaker_sessions(SynthConfig(
        seed=10, orgs=3, users_per_org=5, sessions_per_user=3, min_turns=3, max_turns=6,
        system_words=(200, 300), tools_per_org=(5, 6), breaker_rate=0.15)))
    text = _lines({"request_id": "a", "session_id": "s", "prompt_token_ids": [1, 2, 3, 4]},
                  {"request_id": "b", "session_id": "s", "prompt_token_ids": [1, 2, 9, 4, 5]})
    (pair,) = trace_pairs("ids.jsonl", LintContext(), text=text)
    cls = pair.classification
    assert (cls.kind, cls.first_divergent_token, cls.tokens_recomputed) == (K.OTHER, 2, 1)


# ------------------------------------------------------------------ real traces
def _summary(path: Path, provider: str | None) -> Counter:
    pairs = trace_pairs(str(path), LintContext(provider=provider))
    return Counter((p.relation, p.classification.kind.value) for p in pairs)


def test_real_traces_run_and_summary(shared_traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claude = _summary(shared_traces / "claude_code", "anthropic")
    codex = _summary(shared_traces / "codex", "openai")
    with capsys.disabled():
        print(f"\nclaude_code (anthropic): {dict(claude)}\ncodex (openai): {dict(codex)}")
    # Claude Code: one compaction rewrites the history; two pauses outlive the 5-minute TTL.
    assert claude[("session", "history-rewritten")] >= 1 and claude[("session", "ttl-gap")] >= 1
    # Codex: the API drops reasoning older than the latest user message, so each new user turn strips it.
    assert codex[("session", "reasoning-stripped")] >= 1
    assert not _summary(shared_traces / "claude_code", None)[("session", "ttl-gap")]
