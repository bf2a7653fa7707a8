"""Tests for the synthetic trace generator: determinism, schema, breakers, hash-id chaining, samples."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcache.engine.traces.synth import (
    BREAKER_KINDS,
    SynthConfig,
    breaker_sessions,
    generate,
    generate_hash_ids,
    iter_hash_ids,
    write_jsonl,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "sample_traces"
NATIVE_KEYS = ["request_id", "session_id", "org", "arrival", "model", "tools", "system", "messages", "output_text"]
HASH_KEYS = ["timestamp", "input_length", "output_length", "hash_ids"]
CONFIG = SynthConfig()  # 3 orgs x 4 users x 2 sessions; one session per breaker kind


@pytest.fixture(scope="module")
def native() -> list[dict]:
    return generate(CONFIG)


@pytest.fixture(scope="module")
def hashed() -> list[dict]:
    return generate_hash_ids(CONFIG, with_session=True)


def by_session(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped per session, in turn order (arrivals rise within a session)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        out[rec["session_id"]].append(rec)
    return out


def text_of(content: str | list | None) -> str:
    return content if isinstance(content, str) else "".join(p["text"] for p in content or [])


def reply_of(rec: dict, nxt: dict) -> dict:
    """The assistant message that ``nxt`` carries for ``rec``'s reply (right after rec's history)."""
    return nxt["messages"][len(rec["messages"])]


def parsed(msg: dict) -> dict:
    """A message with its JSON strings parsed, so key order no longer matters."""
    def load(text: str) -> object:
        try:
            return json.loads(text)
        except ValueError:
            return text

    out = dict(msg)
    if msg.get("tool_calls"):
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": load(c["function"]["arguments"])}}
                             for c in msg["tool_calls"]]
    if msg["role"] == "tool":
        out["content"] = load(msg["content"])
    return out


# --- determinism and order -------------------------------------------------------------------


def test_same_seed_gives_identical_output() -> None:
    cfg = SynthConfig(seed=5, orgs=2, users_per_org=2)
    assert json.dumps(generate(cfg)) == json.dumps(generate(SynthConfig(seed=5, orgs=2, users_per_org=2)))
    assert generate_hash_ids(cfg) == generate_hash_ids(SynthConfig(seed=5, orgs=2, users_per_org=2))


def test_different_seed_gives_different_output() -> None:
    assert generate(SynthConfig(seed=1)) != generate(SynthConfig(seed=2))
    assert generate_hash_ids(SynthConfig(seed=1)) != generate_hash_ids(SynthConfig(seed=2))


def test_records_are_sorted_by_arrival(native: list[dict], hashed: list[dict]) -> None:
    arrivals = [r["arrival"] for r in native]
    assert arrivals == sorted(arrivals)
    stamps = [r["timestamp"] for r in hashed]
    assert stamps == sorted(stamps)
    # Both traces follow one plan: same requests, same arrivals, same order.
    assert [r["request_id"] for r in hashed] == [r["request_id"] for r in native]
    assert stamps == [round(a * 1000) for a in arrivals]
    for recs in by_session(native).values():
        assert [r["request_id"] for r in recs] == [f"{recs[0]['session_id']}-t{t}" for t in range(len(recs))]


# --- native schema and history ---------------------------------------------------------------


def test_native_schema(native: list[dict]) -> None:
    assert len({r["request_id"] for r in native}) == len(native)
    for rec in native:
        assert list(rec) in (NATIVE_KEYS, NATIVE_KEYS + ["output_tool_calls"])
        assert isinstance(rec["arrival"], float) and rec["arrival"] >= CONFIG.start
        assert rec["session_id"].startswith(rec["org"] + "-") and rec["request_id"].startswith(rec["session_id"])
        assert isinstance(rec["output_text"], str) and rec["output_text"]
        for tool in rec["tools"]:
            fn = tool["function"]
            assert tool["type"] == "function" and fn["name"] and fn["description"]
            assert fn["parameters"]["type"] == "object" and set(fn["parameters"]["required"]) <= set(
                fn["parameters"]["properties"])
        pending: set[str] = set()
        for msg in rec["messages"]:
            assert msg["role"] in ("user", "assistant", "tool")
            assert msg["role"] != "user" or text_of(msg["content"])
            if msg["role"] == "tool":
                pending.remove(msg["tool_call_id"])  # answers a call made just before
            else:
                assert not pending, f"{rec['request_id']}: tool calls left unanswered"
            for call in msg.get("tool_calls", []):
                assert call["type"] == "function" and isinstance(json.loads(call["function"]["arguments"]), dict)
                pending.add(call["id"])
        assert rec["messages"][0]["role"] == "user" and not pending


def test_history_is_append_only_outside_breakers(native: list[dict]) -> None:
    broken = breaker_sessions(CONFIG)
    checked = 0
    for sid, recs in by_session(native).items():
        kind, turn = broken.get(sid, (None, 0))
        for t in range(1, len(recs)):
            prev, cur = recs[t - 1], recs[t]
            if kind in ("json_keys", "truncation") and t == turn:
                continue
            n = len(prev["messages"])
            assert cur["messages"][:n] == prev["messages"], cur["request_id"]
            reply, new = cur["messages"][n], cur["messages"][n + 1:]
            assert reply["role"] == "assistant" and reply["content"] == prev["output_text"]
            # The reply in history is exactly what the model generated, tool calls included.
            assert reply.get("tool_calls") == prev.get("output_tool_calls")
            if "tool_calls" in reply:
                assert [m["tool_call_id"] for m in new] == [c["id"] for c in reply["tool_calls"]]
            else:
                assert [m["role"] for m in new] == ["user"]
            checked += 1
    assert checked > 50


def test_org_shares_system_prompt_and_tools(native: list[dict]) -> None:
    broken = breaker_sessions(CONFIG)
    systems: dict[str, set[str]] = defaultdict(set)
    tools: dict[str, set[str]] = defaultdict(set)
    for rec in native:
        kind, turn = broken.get(rec["session_id"], (None, 0))
        t = int(rec["request_id"].rsplit("-t", 1)[1])
        if kind != "timestamp":
            systems[rec["org"]].add(rec["system"])
        if kind != "tool_order" or t < turn:
            tools[rec["org"]].add(json.dumps(rec["tools"]))
    assert len(systems) == CONFIG.orgs and all(len(s) == 1 for s in systems.values())
    assert all(len(s) == 1 for s in tools.values())
    assert len({next(iter(s)) for s in systems.values()}) == CONFIG.orgs  # orgs differ
    for org, (system,) in ((o, tuple(s)) for o, s in systems.items()):
        words = system.split()
        assert CONFIG.system_words[0] <= len(words) <= CONFIG.system_words[1] + 40, org
        assert len(set(words)) > 100  # varied text, not one word repeated
        n_tools = len(json.loads(next(iter(tools[org]))))
        assert CONFIG.tools_per_org[0] <= n_tools <= CONFIG.tools_per_org[1]


# --- breakers ----------------------------------------------------------------------------------


def test_every_breaker_kind_appears_and_shows_in_the_data(native: list[dict]) -> None:
    broken = breaker_sessions(CONFIG)
    assert sorted({kind for kind, _ in broken.values()}) == sorted(BREAKER_KINDS)
    sessions = by_session(native)
    for sid, (kind, turn) in broken.items():
        recs = sessions[sid]
        if kind == "timestamp":
            stamps = [r["system"].split("\n")[1] for r in recs]
            assert all(s.startswith("Current time: 20") and s.endswith("Z") for s in stamps)
            assert len(set(stamps)) == len(recs)  # changes on every request
        elif kind == "tool_order":
            names = [[t["function"]["name"] for t in r["tools"]] for r in recs]
            assert all(names[t] == names[0] for t in range(turn))
            assert all(names[t] != names[t - 1] and sorted(names[t]) == sorted(names[0])
                       for t in range(turn, len(recs)))
        else:
            prev, cur = recs[turn - 1]["messages"], recs[turn]["messages"]
            if kind == "json_keys":
                old = prev + [reply_of(recs[turn - 1], recs[turn])]
                changed = [i for i, m in enumerate(old) if cur[i] != m]
                assert changed and all(parsed(cur[i]) == parsed(old[i]) for i in changed)
            else:  # truncation: the task is kept, older turns dropped, then the old tail and the reply
                assert cur[0] == prev[0] and cur[1]["role"] == "assistant"
                j = prev.index(cur[1]) if cur[1] in prev else len(prev)
                assert j >= 2 and cur[1:len(prev) - j + 1] == prev[j:]
                reply = cur[len(prev) - j + 1]
                assert reply["role"] == "assistant" and reply["content"] == recs[turn - 1]["output_text"]
    for rec in native:
        if rec["session_id"] not in broken or broken[rec["session_id"]][0] != "timestamp":
            assert "Current time" not in rec["system"]


def test_breaker_rate_and_kinds_are_honoured() -> None:
    assert breaker_sessions(SynthConfig(breaker_rate=0)) == {}
    only = breaker_sessions(SynthConfig(breaker_rate=0.5, breakers=("truncation",)))
    assert len(only) == 12 and {k for k, _ in only.values()} == {"truncation"}
    assert all(turn >= 2 for _, turn in only.values())


@pytest.mark.parametrize("kwargs", [
    {"orgs": 0}, {"users_per_org": -1}, {"seed": 1.5}, {"seed": True}, {"min_turns": 0},
    {"min_turns": 5, "max_turns": 4}, {"mean_gap": 0}, {"span": -1.0}, {"start": float("nan")},
    {"breaker_rate": 1.5}, {"breakers": ("clock",)},
    {"breakers": ("timestamp", "timestamp")}, {"system_words": (10, 20)}, {"system_words": (500, 400)},
    {"tools_per_org": (1, 3)}, {"tools_per_org": (5, 99)}, {"block_size": 0},
])
def test_bad_config_raises_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="synth: "):
        SynthConfig(**kwargs)


# --- hash ids ----------------------------------------------------------------------------------


def check_hash_invariants(records: list[dict], cfg: SynthConfig) -> int:
    """Schema, ceil length, first-use numbering and prefix chaining within each session.

    Returns how many breaker transitions kept fewer ids than an append would have.
    """
    bs, seen_max, shortened = cfg.block_size, -1, 0
    broken = breaker_sessions(cfg)
    for rec in records:
        assert len(rec["hash_ids"]) == math.ceil(rec["input_length"] / bs) and rec["output_length"] > 0
        for h in rec["hash_ids"]:
            assert isinstance(h, int) and h <= seen_max + 1  # ids count up in order of first use
            seen_max = max(seen_max, h)
    for sid, recs in by_session(records).items():
        kind, turn = broken.get(sid, (None, 0))
        for t in range(1, len(recs)):
            prev, cur = recs[t - 1], recs[t]
            full = prev["input_length"] // bs  # the partial last block is re-hashed, never kept
            kept = next((i for i, (a, b) in enumerate(zip(prev["hash_ids"], cur["hash_ids"])) if a != b),
                        min(len(prev["hash_ids"]), len(cur["hash_ids"])))
            if kind == "timestamp" or (kind == "tool_order" and t >= turn) or (kind and t == turn):
                # A breaker's first changed token may still fall in the old partial block.
                assert kept <= full and (kind != "timestamp" or kept == 0), cur["request_id"]
                shortened += kept < full
            else:
                assert cur["hash_ids"][:full] == prev["hash_ids"][:full] and kept == full, cur["request_id"]
            assert set(cur["hash_ids"][kept:]).isdisjoint(prev["hash_ids"])
    return shortened


def test_hash_id_schema_and_chaining(hashed: list[dict]) -> None:
    plain = generate_hash_ids(CONFIG)
    assert all(list(r) == HASH_KEYS for r in plain)
    assert [{k: r[k] for k in HASH_KEYS} for r in hashed] == plain
    broken = breaker_sessions(CONFIG)
    transitions = sum(len(recs) - 1 if kind == "timestamp" else len(recs) - turn if kind == "tool_order" else 1
                      for recs in by_session(hashed).values()
                      for kind, turn in [broken.get(recs[0]["session_id"], (None, 0))] if kind)
    assert check_hash_invariants(hashed, CONFIG) == transitions  # at 512 tokens every breaker costs blocks


def test_org_sessions_share_leading_ids(hashed: list[dict]) -> None:
    broken = breaker_sessions(CONFIG)
    firsts: dict[str, list[list[int]]] = defaultdict(list)
    lone: list[list[int]] = []
    for recs in by_session(hashed).values():
        kind = broken.get(recs[0]["session_id"], (None,))[0]
        (lone if kind == "timestamp" else firsts[recs[0]["org"]]).append(recs[0]["hash_ids"])
    prefixes = {}
    for org, lists in firsts.items():
        common = min(next((i for i, (a, b) in enumerate(zip(lists[0], x)) if a != b), len(x)) for x in lists[1:])
        assert common >= 2, org  # 2000+ tokens of system prompt and tools
        prefixes[org] = set(lists[0][:common])
    orgs = list(prefixes.values())
    assert all(a.isdisjoint(b) for i, a in enumerate(orgs) for b in orgs[i + 1:])
    assert lone and all(prefix.isdisjoint(ids) for ids in lone for prefix in orgs)


def test_iter_hash_ids_streams() -> None:
    stream = iter_hash_ids(CONFIG)
    assert inspect.isgenerator(stream)
    assert list(next(stream)) == HASH_KEYS


def test_hash_ids_scale_to_a_million_blocks() -> None:
    # The benchmark's shape; no timing here (benchmarks print figures, tests do not time).
    cfg = SynthConfig(orgs=20, users_per_org=50, sessions_per_user=10)
    assert sum(len(r["hash_ids"]) for r in iter_hash_ids(cfg)) >= 1_000_000


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), orgs=st.integers(1, 3), users=st.integers(1, 3),
       turns=st.tuples(st.integers(1, 4), st.integers(0, 8)), rate=st.floats(0, 1),
       block_size=st.sampled_from([16, 256, 512]))
def test_hash_invariants_hold_for_any_config(seed: int, orgs: int, users: int, turns: tuple[int, int],
                                             rate: float, block_size: int) -> None:
    cfg = SynthConfig(seed=seed, orgs=orgs, users_per_org=users, min_turns=turns[0],
                      max_turns=turns[0] + turns[1], breaker_rate=rate, block_size=block_size)
    records = generate_hash_ids(cfg, with_session=True)
    assert [r["timestamp"] for r in records] == sorted(r["timestamp"] for r in records)
    check_hash_invariants(records, cfg)


# --- files -------------------------------------------------------------------------------------


def test_write_jsonl_round_trips(tmp_path: Path, native: list[dict]) -> None:
    path = tmp_path / "t.jsonl"
    assert write_jsonl(native[:20], path) == 20
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    assert [json.loads(line) for line in raw.decode().splitlines()] == native[:20]


def load_sample_script() -> object:
    spec = importlib.util.spec_from_file_location("sample_traces_generate", SAMPLES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_samples_equal_a_fresh_generation(tmp_path: Path) -> None:
    load_sample_script().main(tmp_path)
    for name in ("agents.jsonl", "agents_hash_ids.jsonl"):
        committed = SAMPLES / name
        assert committed.stat().st_size < 1_000_000, f"{name} must stay under 1 MB"
        assert committed.read_bytes() == (tmp_path / name).read_bytes(), (
            f"{name} drifted from the generator; rerun `python sample_traces/generate.py`")


def test_sample_readme_lists_the_breaker_sessions() -> None:
    config = load_sample_script().CONFIG
    readme = (SAMPLES / "README.md").read_text()
    for session_id, (kind, turn) in breaker_sessions(config).items():
        assert f"| `{session_id}` | `{kind}` | {turn} |" in readme
    assert f"seed={config.seed}" in readme
