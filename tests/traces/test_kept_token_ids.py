"""Token ids kept on requests for ``--compute``: text, token-id and block-hash traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcache.engine.errors import KVCacheError
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.traces.stream import RequestStream, StreamOptions, hash_id_tokens
from kvcache.engine.traces.tokenizer import is_registered, register_encoder


def _write(tmp_path: Path, rows: list[dict]) -> str:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_token_id_trace_keeps_prompt_then_recorded_reply(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        {"request_id": "a", "prompt_token_ids": list(range(40)), "output_token_ids": [7, 8, 9]},
        {"request_id": "b", "prompt_token_ids": list(range(20)), "output_length": 5},
    ])
    a, b = RequestStream(path, StreamOptions(keep_token_ids=True))
    # KV exists for P + N - 1 tokens: the last sampled token is never fed back.
    assert a.token_ids == list(range(40)) + [7, 8]
    assert b.token_ids == list(range(20))  # the reply is not recorded
    # The kept tokens are exactly the tokens the block keys were hashed from.
    assert a.block_keys[:2] == hash_token_blocks(a.token_ids, 16, "xxh3_128", None, None)[:2]


def test_token_ids_are_not_kept_by_default(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"request_id": "a", "prompt_token_ids": [1, 2, 3], "output_length": 1}])
    (a,) = RequestStream(path)
    assert a.token_ids is None


def test_native_trace_keeps_rendered_tokens(tmp_path: Path) -> None:
    row = {"request_id": "a", "session_id": "s", "messages": [{"role": "user", "content": "hello there, how are you"}],
           "output_text": "fine thanks"}
    path = _write(tmp_path, [row])
    (a,) = RequestStream(path, StreamOptions(keep_token_ids=True))
    assert a.token_ids is not None
    assert a.output_tokens > 1
    assert len(a.token_ids) == a.prompt_tokens + a.output_tokens - 1


def test_hash_id_tokens_equal_for_equal_blocks() -> None:
    a = hash_id_tokens([1, 2, 3], None, 4, 12)
    b = hash_id_tokens([1, 2, 9], None, 4, 10)
    assert len(a) == 12 and len(b) == 10
    assert a[:8] == b[:8]  # shared hash ids, shared tokens
    assert a[8:10] != b[8:10]
    # The org salts block keys, so it salts the stand-in tokens too.
    assert hash_id_tokens([1], "acme", 4, 4) != hash_id_tokens([1], None, 4, 4)


def test_mooncake_requests_get_stand_in_tokens(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        {"timestamp": 0, "input_length": 1000, "output_length": 2, "hash_ids": [0, 1]},
        {"timestamp": 1, "input_length": 600, "output_length": 2, "hash_ids": [0, 5]},
    ])
    a, b = RequestStream(path, StreamOptions(keep_token_ids=True))
    # hit cap none: every hash id is a whole 512-token block
    assert len(a.token_ids) == 1024 and len(b.token_ids) == 1024
    assert a.token_ids[:512] == b.token_ids[:512] and a.token_ids[512:] != b.token_ids[512:]


def test_registered_encoder_is_a_valid_tokenizer_name(tmp_path: Path) -> None:
    register_encoder("model:test-bytes", lambda text: list(text.encode()))
    assert is_registered("model:test-bytes")
    row = {"request_id": "a", "messages": [{"role": "user", "content": "hi"}], "output_length": 1}
    (a,) = RequestStream(_write(tmp_path, [row]), StreamOptions(tokenizer="model:test-bytes", keep_token_ids=True))
    assert all(t < 256 for t in a.token_ids)
    with pytest.raises(KVCacheError):
        register_encoder("cl100k_base", lambda text: [])
