"""The tokenizer that ships with a real model (GGUF metadata or ``tokenizer.json``).

Matches the ``encode``/``name`` interface of
:class:`kvcache.engine.traces.tokenizer.SegmentTokenizer`, and adds ``decode``
and the special-token ids a generation loop needs.

A GGUF file stores a byte-level BPE vocabulary as three arrays
(``tokenizer.ggml.tokens``, ``.token_type``, ``.merges``) plus a name for the
pre-tokenizer regex (``tokenizer.ggml.pre``); llama.cpp maps that name to its
regexes in ``llama-vocab.cpp``. We rebuild the same pipeline with the
``tokenizers`` package.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvcache.engine.errors import ConfigError

# llama.cpp token types (gguf.TokenType): 3 = CONTROL, 4 = USER_DEFINED.
_CONTROL, _USER_DEFINED = 3, 4

# tokenizer.ggml.pre names whose regex is "each digit alone, then GPT-2's" (llama.cpp
# LLAMA_VOCAB_PRE_TYPE_SMOLLM / STARCODER / REFACT / CODESHELL).
_DIGITS_THEN_GPT2 = frozenset({"smollm", "starcoder", "refact", "codeshell"})
_GPT2 = frozenset({"gpt-2", "gpt2"})
# Llama 3's regex (its tokenizer.json Split pattern; llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3).
_LLAMA3 = frozenset({"llama-bpe", "llama3"})
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise ConfigError(
            "a real model's tokenizer needs the 'tokenizers' package: pip install 'kvcache[torch]'"
        ) from e
    return tokenizers


class ModelTokenizer:
    """Text to token ids and back, with the model's own vocabulary.

    ``encode`` never adds a BOS token; prepend :attr:`bos_id` when
    :attr:`add_bos` says the model expects one.

    Attributes:
        name: a label for reports (the model's name).
        bos_id: the beginning-of-sequence token, or ``None``.
        eos_id: the end-of-sequence token, or ``None``.
        add_bos: whether prompts should start with ``bos_id``.
    """

    def __init__(self, tok: Any, name: str, bos_id: int | None, eos_id: int | None, add_bos: bool = False) -> None:
        self._tok = tok
        self._plain: Any = None  # a copy that treats special-token strings as text, made on demand
        self.name = name
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text``.

        Args:
            text: the text.
            special: whether special-token strings such as ``<|im_start|>`` in
                the text become their ids (as a chat template needs), or are
                encoded as ordinary text (as untrusted user text should be).
        """
        if special:
            return self._tok.encode(text, add_special_tokens=False).ids
        if self._plain is None:
            self._plain = _tokenizers().Tokenizer.from_str(self._tok.to_str())
            self._plain.encode_special_tokens = True
        return self._plain.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        """The text of ``ids`` (special tokens kept unless ``skip_special``)."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int | None:
        """The id of one vocabulary entry, or ``None``."""
        return self._tok.token_to_id(token)

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any], name: str, source: str) -> ModelTokenizer:
        """Build the tokenizer from GGUF metadata (``tokenizer.ggml.*`` keys, already decoded).

        Raises:
            ConfigError: the vocabulary is not byte-level BPE, or its pre-tokenizer
                is one this module does not know.
        """
        tk = _tokenizers()
        model = fields.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ConfigError(f"{source}: tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' only)")
        pre_name = fields.get("tokenizer.ggml.pre", "gpt-2")
        byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre_name in _DIGITS_THEN_GPT2:
            pre = tk.pre_tokenizers.Sequence([tk.pre_tokenizers.Digits(individual_digits=True), byte_level])
        elif pre_name in _GPT2:
            pre = byte_level
        elif pre_name in _LLAMA3:
            split = tk.pre_tokenizers.Split(tk.Regex(_LLAMA3_REGEX), behavior="isolated", invert=False)
            bytes_only = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
            pre = tk.pre_tokenizers.Sequence([split, bytes_only])
        else:
            raise ConfigError(f"{source}: pre-tokenizer {pre_name!r} is not supported")

        tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
        types: list[int] = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
        merges: list[tuple[str, str]] = []
        for m in fields.get("tokenizer.ggml.merges") or []:
            left, sep, right = m.partition(" ")
            if not sep:
                raise ConfigError(f"{source}: merge {m!r} is not two tokens separated by a space")
            merges.append((left, right))
        vocab = {t: i for i, t in enumerate(tokens)}
        tok = tk.Tokenizer(tk.models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = pre
        tok.decoder = tk.decoders.ByteLevel()
        # Control tokens (<|im_start|>) must match as whole strings before BPE runs.
        control = [t for t, k in zip(tokens, types) if k == _CONTROL]
        user = [t for t, k in zip(tokens, types) if k == _USER_DEFINED]
        tok.add_special_tokens([tk.AddedToken(t, special=True, normalized=False) for t in control])
        tok.add_tokens([tk.AddedToken(t, special=False, normalized=False) for t in user])
        return cls(
            tok,
            name=name,
            bos_id=fields.get("tokenizer.ggml.bos_token_id"),
            eos_id=fields.get("tokenizer.ggml.eos_token_id"),
            add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
        )

    @classmethod
    def from_hf_dir(cls, directory: Path, name: str, config: dict[str, Any]) -> ModelTokenizer | None:
        """Load ``directory/tokenizer.json``, or return ``None`` when there is none.

        BOS/EOS come from ``tokenizer_config.json`` (token strings) when present,
        else from ``config.json`` (``bos_token_id`` / ``eos_token_id``).
        """
        path = directory / "tokenizer.json"
        if not path.is_file():
            return None
        tk = _tokenizers()
        try:
            tok = tk.Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types
            raise ConfigError(f"{path}: cannot load a Hugging Face tokenizer.json ({e})") from e
        bos, eos = _first_id(config.get("bos_token_id")), _first_id(config.get("eos_token_id"))
        add_bos = False
        tc_path = directory / "tokenizer_config.json"
        if tc_path.is_file():
            try:
                tc = json.loads(tc_path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{tc_path}: not valid JSON ({e})") from e
            bos = _token_id(tok, tc.get("bos_token")) if tc.get("bos_token") else bos
            eos = _token_id(tok, tc.get("eos_token")) if tc.get("eos_token") else eos
            add_bos = bool(tc.get("add_bos_token", False))
        return cls(tok, name=name, bos_id=bos, eos_id=eos, add_bos=add_bos)


def _first_id(value: Any) -> int | None:
    # config.json may list several EOS ids; the first is the canonical one.
    if isinstance(value, list):
        return value[0] if value else None
    return value if isinstance(value, int) else None


def _token_id(tok: Any, token: Any) -> int | None:
    # tokenizer_config.json writes a token either as a string or as {"content": ...}.
    text = token.get("content") if isinstance(token, dict) else token
    return tok.token_to_id(text) if isinstance(text, str) else None
