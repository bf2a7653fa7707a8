"""Offline vocabularies, model-family selection and Hugging Face tokenizer.json files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app
from kvcache.engine.errors import KVCacheError
from kvcache.engine.traces import tokenizer as tokmod
from kvcache.engine.traces.stream import RequestStream, StreamOptions
from kvcache.engine.traces.tokenizer import SegmentTokenizer, load_encoder, tokenizer_for_model

runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tokenizer tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_encoder.cache_clear()
    yield
    load_encoder.cache_clear()


def test_both_vocabularies_load_offline_with_known_ids(no_network: None) -> None:
    assert SegmentTokenizer("cl100k_base").encode("hello world") == [15339, 1917]
    o200k = SegmentTokenizer("o200k_base")
    assert o200k.encode("hello world") == [24912, 2375]
    # Ids as bpe-openai's own Rust encoder gives them for the same vocabulary.
    assert o200k.encode("héllo 世界") == [79163, 72807, 185558]


def test_o200k_vocabulary_is_checked_against_the_official_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokmod, "O200K_SHA256", "0" * 64)
    load_encoder.cache_clear()
    try:
        with pytest.raises(KVCacheError, match="expected tiktoken's 0000"):
            load_encoder("o200k_base")
    finally:
        load_encoder.cache_clear()


@pytest.mark.parametrize(
    ("model", "name"),
    [("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("openai/gpt-5.1-codex", "o200k_base"),
     ("o3-mini", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
     ("claude-sonnet-4-5", "cl100k_base"), ("llama-3.1-8b", "cl100k_base"), (None, "cl100k_base")],
)
def test_tokenizer_follows_the_model_family(model: str | None, name: str) -> None:
    assert tokenizer_for_model(model) == name


def native_rows(models: list[str]) -> list[dict]:
    return [{"request_id": str(i), "model": m, "system": "Answer briefly: 世界 🙂 " * 20,
             "messages": [{"role": "user", "content": "hello world " * 30}]} for i, m in enumerate(models)]


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_auto_picks_a_vocabulary_per_request(tmp_path: Path) -> None:
    stream = RequestStream(write(tmp_path / "t.jsonl", native_rows(["gpt-4o", "llama-3.1-8b", "gpt-4o"])))
    reqs = list(stream)
    assert sorted(stream.tokenizers) == ["cl100k_base", "o200k_base"]
    assert reqs[0].prompt_tokens == reqs[2].prompt_tokens != reqs[1].prompt_tokens
    forced = RequestStream(write(tmp_path / "t.jsonl", native_rows(["gpt-4o", "llama-3.1-8b"])), StreamOptions(tokenizer="cl100k_base"))
    a, b = list(forced)
    assert a.prompt_tokens == b.prompt_tokens and list(forced.tokenizers) == ["cl100k_base"]


def test_cli_tokenizer_option_and_notes(tmp_path: Path) -> None:
    trace = write(tmp_path / "t.jsonl", native_rows(["llama-3.1-8b"]))
    a = json.loads(runner.invoke(app, ["replay", trace, "-f", "json"]).stdout)["summary"]
    b = json.loads(runner.invoke(app, ["replay", trace, "-f", "json", "--tokenizer", "o200k_base"]).stdout)["summary"]
    assert a["prompt_tokens"] != b["prompt_tokens"]
    assert any("o200k_base" in n for n in b["notes"]) and any("cl100k_base" in n for n in a["notes"])
    r = runner.invoke(app, ["replay", trace, "--tokenizer", "klingon"])
    assert r.exit_code == 2 and "unknown tokenizer" in r.output
    r = runner.invoke(app, ["replay", trace, "--tokenizer", str(tmp_path / "missing.json")])
    assert r.exit_code == 1 and "cannot load a Hugging Face tokenizer.json" in r.stderr


def test_hugging_face_tokenizer_json(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert SegmentTokenizer(str(path)).encode("hello world hello") == [1, 2, 1]
    trace = write(tmp_path / "t.jsonl", native_rows(["gpt-4o", "gpt-4o"]))
    r = runner.invoke(app, ["replay", trace, "-f", "json", "--tokenizer", str(path)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["summary"]
    assert s["requests"] == 2 and s["cached_tokens"] > 0
