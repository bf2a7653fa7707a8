"""Bailian block-hash traces: detection, sessions from parent links, 16-token blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app
from kvcache.engine.errors import TraceError
from kvcache.engine.traces.stream import RequestStream

runner = CliRunner()

# Two conversations. Chat 1 -> 3 -> 4 is one (each turn extends the previous
# turn's ids); chat 2 is a single request sharing the first two blocks (a
# common system prompt); chat 9's parent 7 is not in the file.
ROWS = [
    {"chat_id": 1, "parent_chat_id": -1, "timestamp": 0.5, "input_length": 40, "output_length": 10, "type": "text", "turn": 1, "hash_ids": [0, 1, 2]},
    {"chat_id": 2, "parent_chat_id": -1, "timestamp": 1.0, "input_length": 33, "output_length": 5, "type": "text", "turn": 1, "hash_ids": [0, 1, 3]},
    {"chat_id": 3, "parent_chat_id": 1, "timestamp": 2.0, "input_length": 70, "output_length": 8, "type": "text", "turn": 2, "hash_ids": [0, 1, 4, 5, 6]},
    {"chat_id": 4, "parent_chat_id": 3, "timestamp": 3.0, "input_length": 96, "output_length": 8, "type": "text", "turn": 3, "hash_ids": [0, 1, 4, 5, 7, 8]},
    {"chat_id": 9, "parent_chat_id": 7, "timestamp": 4.0, "input_length": 16, "output_length": 1, "type": "text", "turn": 5, "hash_ids": [0]},
]


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_detection_sessions_and_block_size(tmp_path: Path) -> None:
    stream = RequestStream(write(tmp_path / "b.jsonl", ROWS))
    reqs = list(stream)
    assert stream.format == "bailian" and stream.block_size == 16 and stream.hit_cap == "none"
    assert [r.request_id for r in reqs] == ["1", "2", "3", "4", "9"]
    assert [r.session_id for r in reqs] == ["1", "2", "1", "1", "7"]
    assert [r.arrival for r in reqs] == [0.5, 1.0, 2.0, 3.0, 4.0]


def test_replay_hits_follow_the_prefix_chains(tmp_path: Path) -> None:
    trace = write(tmp_path / "b.jsonl", ROWS)
    r = runner.invoke(app, ["replay", trace, "-f", "json", "--per-request", str(tmp_path / "rows.jsonl")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    # Leading hits: 0; [0,1] of chat 1; [0,1] (block 4 is new); [0,1,4,5]; [0].
    assert [row["hit_blocks"] for row in rows] == [0, 2, 2, 4, 1]
    assert [row["cached_tokens"] for row in rows] == [0, 32, 32, 64, 16]
    data = json.loads(r.stdout)
    assert {s["session_id"]: s["requests"] for s in data["sessions"]} == {"1": 3, "2": 1, "7": 1}


def test_bailian_lines_are_checked(tmp_path: Path) -> None:
    bad = dict(ROWS[0], hash_ids=[0, 1])  # 40 tokens need 3 blocks of 16
    with pytest.raises(TraceError, match=r"b.jsonl:1: input_length 40 at 16 tokens per block needs 3 hash ids"):
        list(RequestStream(write(tmp_path / "b.jsonl", [bad])))
    with pytest.raises(TraceError, match=r"b.jsonl:2: expected a 'chat_id'"):
        list(RequestStream(write(tmp_path / "b.jsonl", [ROWS[0], dict(ROWS[1], chat_id=None)])))
