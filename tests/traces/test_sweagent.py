"""SWE-agent trajectories: queries, prompts from history or recorded steps, bad entries, the CLI.

The real .traj files are read from ../shared/traces/sweagent when present
(the ``shared_traces`` fixture skips otherwise); everything else is synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app
from kvcache.engine.traces import sweagent as sa
from kvcache.engine.traces.detect import detect_format
from kvcache.engine.traces.logs import first_object
from kvcache.engine.traces.records import ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.render import END, GENERATION_PROMPT
from kvcache.engine.traces.tokenizer import SegmentTokenizer

runner = CliRunner()
MARSHMALLOW = "marshmallow-1867.function_calling_replace_from_source.traj"
PYDICOM = "pydicom__pydicom-1458.traj"

# ---------------------------------------------------------------- trajectory builders


def m(role: str, content: Any, **kw: Any) -> dict[str, Any]:
    return {"role": role, "content": content, "agent": "main", **kw}


def call(cid: str, command: str) -> list[dict]:
    return [{"id": cid, "type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": command})}}]


def history() -> list[dict]:
    return [
        m("system", "You are an autonomous programmer."),
        m("user", [{"type": "text", "text": "Fix the bug.", "cache_control": {"type": "ephemeral"}}]),
        m("assistant", "Look around.", tool_calls=call("c1", "ls")),
        m("tool", "a.py\nb.py", tool_call_ids=["c1"]),
        m("assistant", "Open it.", tool_calls=call("c2", "cat a.py")),
        m("tool", "print(1)", tool_call_ids=["c2"]),
        m("assistant", "Submit.", tool_calls=call("c3", "submit")),
    ]


def traj(hist: list[Any], steps: list[Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"history": hist, "trajectory": steps if steps is not None else [], "info": {}, **kw}


def read(doc: Any, path: str = "run.traj") -> list:
    return list(sa.read_records(path, [(1, doc)], ReaderOptions()))


def queries(doc: Any) -> list[TraceRecord]:
    out = read(doc)
    assert not [r for r in out if isinstance(r, SkippedLine)], out
    return out


# ---------------------------------------------------------------- synthetic trajectories


def test_looks_like_trajectories_only() -> None:
    assert sa.looks_like(traj(history()))
    assert not sa.looks_like({"history": history()})
    assert not sa.looks_like({"document": [{"history": [], "trajectory": []}]})
    assert not sa.looks_like({"model": "gpt-4o", "messages": []})


def test_history_prompts_are_append_only_with_replies_as_carried() -> None:
    recs = queries(traj(history()))
    assert [r.request_id for r in recs] == ["run/1", "run/2", "run/3"]
    assert recs[0].segments == ["<|system|>\nYou are an autonomous programmer." + END,
                                "<|user|>\n", "Fix the bug." + END, GENERATION_PROMPT]
    reply = 'Look around.<|tool_call|>c1 bash\n{"command": "ls"}\n' + END
    assert recs[0].output_segments == [reply]
    # tool_call_ids[0] names the result; the next prompt carries the reply as it was generated.
    assert recs[1].segments == [*recs[0].segments, reply, "<|tool|>c1\n", "a.py\nb.py" + END, GENERATION_PROMPT]
    for a, b in zip(recs, recs[1:]):
        assert b.segments[: len(a.segments) + 1] == [*a.segments, *a.output_segments]
    assert all(r.billed is None and r.arrival is None and r.session_id == "run" for r in recs)


def test_recorded_steps_are_what_the_next_query_sent() -> None:
    hist = history()
    elided = [*hist[:3], m("tool", "Old environment output: (2 lines omitted)", tool_call_ids=["c1"]), *hist[4:6]]
    steps = [{"messages": hist[:4]}, {"messages": elided}, {"messages": hist}]
    recs = queries(traj(hist, steps))
    assert "<|tool|>c1\n" in recs[1].segments and "a.py\nb.py" + END in recs[1].segments
    # Query 3 sends step 2's messages: the old output is elided there, breaking the prefix.
    assert "Old environment output: (2 lines omitted)" + END in recs[2].segments
    assert "a.py\nb.py" + END not in recs[2].segments
    # Steps that do not line up with the replies are not used.
    assert [r.segments for r in queries(traj(hist, steps[:2]))] == [r.segments for r in queries(traj(hist))]


def test_other_agents_are_left_out_and_model_comes_from_replay_config() -> None:
    hist = history()
    hist.insert(4, {**m("assistant", "subroutine"), "agent": "sub"})
    config = {"agent": {"model": {"name": "gpt-4o"}}}
    recs = queries(traj(hist, replay_config=json.dumps(config)))
    assert len(recs) == 3 and not any("subroutine" in str(s) for r in recs for s in r.segments)
    assert {r.model for r in recs} == {"gpt-4o"}
    config["agent"]["model"]["name"] = "replay"  # a stand-in, not a model
    assert {r.model for r in queries(traj(history(), replay_config=config))} == {None}


def test_bad_entries_are_skipped_lines_and_left_out() -> None:
    hist = history()
    hist[3] = m("tool", [{"type": "audio"}], tool_call_ids=["c1"])
    hist.insert(5, "not a message")
    hist.insert(6, m("critic", "?"))
    steps = [{"messages": hist[:3]}, {"messages": [{"role": "tool", "content": 5}] * 5}, {"messages": []}]
    out = read(traj(hist, steps), path="x.traj")
    skipped = [s for s in out if isinstance(s, SkippedLine)]
    assert [s.reason.split(":")[0] for s in skipped] == ["history[3]", "history[5]", "history[6]", "trajectory[1].messages[0]"]
    assert "using the history instead" in skipped[-1].reason
    assert all(s.line == 1 and s.path == "x.traj" for s in skipped)
    recs = [r for r in out if isinstance(r, TraceRecord)]
    assert len(recs) == 3 and not any("audio" in str(s) for r in recs for s in r.segments)
    assert read({"history": "nope"})[0].reason.startswith("expected a SWE-agent trajectory")


# ---------------------------------------------------------------- the shared real trajectories


def _real(shared: Path, name: str) -> tuple[list[TraceRecord], list[SkippedLine], dict]:
    path = shared / "sweagent" / name
    doc = first_object(str(path), False, [])
    out = list(sa.read_records(str(path), [(1, doc)], ReaderOptions()))
    return [r for r in out if isinstance(r, TraceRecord)], [r for r in out if isinstance(r, SkippedLine)], doc


def test_shared_pydicom_is_append_only_and_matches_tokens_sent(shared_traces: Path) -> None:
    recs, skipped, doc = _real(shared_traces, PYDICOM)
    assert not skipped and len(recs) == doc["info"]["model_stats"]["api_calls"] == 12
    for a, b in zip(recs, recs[1:]):
        assert b.segments[: len(a.segments) + 1] == [*a.segments, *a.output_segments]
    # A run total (no per-call usage): our cl100k count of all prompts is within 3% (123,632 vs 122,612).
    tok = SegmentTokenizer("cl100k_base")
    ours = sum(len(tok.encode_segments(r.segments)) for r in recs)  # type: ignore[arg-type]
    assert abs(ours / doc["info"]["model_stats"]["tokens_sent"] - 1) < 0.03


def test_shared_marshmallow_breaks_only_where_old_outputs_are_elided(shared_traces: Path) -> None:
    recs, skipped, doc = _real(shared_traces, MARSHMALLOW)
    assert not skipped and len(recs) == len(doc["trajectory"]) == 13
    assert {r.model for r in recs} == {None}  # recorded by SWE-agent's replay model
    breaks = []
    for n, (a, b) in enumerate(zip(recs, recs[1:]), start=2):
        carried = [*a.segments[:-1], GENERATION_PROMPT, *a.output_segments]
        if b.segments[: len(carried)] != carried:
            i = next(i for i, (x, y) in enumerate(zip(carried, b.segments)) if x != y)
            assert str(b.segments[i]).startswith("Old environment output: ("), (n, b.segments[i])
            breaks.append(n)
    assert breaks == list(range(7, 14))  # last_n_observations starts eliding at query 7


# ---------------------------------------------------------------- the CLI


def _replay(*args: str) -> dict:
    r = runner.invoke(app, ["replay", *args, "-f", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("name, requests", [(MARSHMALLOW, 13), (PYDICOM, 12)])
def test_cli_replays_shared_trajectories(shared_traces: Path, name: str, requests: int) -> None:
    path = shared_traces / "sweagent" / name
    assert detect_format(first_object(str(path), False, []), str(path), 1) == "swe-agent"
    s = _replay(str(path))["summary"]
    assert (s["input_format"], s["requests"], s["skipped_lines"]) == ("swe-agent", requests, 0)
    assert s["billed_prompt_tokens"] is None and s["cached_tokens"] > 0


def test_cli_reports_a_bad_entry_as_file_and_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.traj"
    hist = history()
    hist[3] = m("tool", 42)
    trace.write_text(json.dumps(traj(hist)))
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"kvcache: error: {trace}:1: history[3]: ")
    assert len(r.stderr.strip().splitlines()) == 1
    s = _replay(str(trace), "--skip-invalid")["summary"]
    assert (s["requests"], s["skipped_lines"]) == (3, 1)


def test_cli_unknown_document_shape(tmp_path: Path) -> None:
    trace = tmp_path / "x.traj"
    trace.write_text(json.dumps({"history": [], "steps": []}))
    r = runner.invoke(app, ["replay", str(trace)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith(f"kvcache: error: {trace}:1: unknown trace format (keys: history, steps)")
    assert len(r.stderr.strip().splitlines()) == 1
