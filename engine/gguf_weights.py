"""Read a llama.cpp ``.gguf`` file into a :class:`ModelConfig` and a state dict.

GGUF names tensors its own way (``blk.0.attn_q.weight``), may quantize them, and
stores Q and K rows permuted for llama.cpp's interleaved RoPE. :func:`read_gguf`
undoes all three: tensors come back as fp32 under
:class:`~kvcache.engine.model.LlamaModel`'s names, in Hugging Face's row order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvcache.engine.errors import ConfigError
from kvcache.engine.model_config import ModelConfig

_INSTALL = "pip install 'kvcache[torch]'"

# GGUF tensor names (llama.cpp) -> ours; "{}" is the layer index.
_GGUF_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "layers.{}.self_attn.o_proj.weight",
    "blk.{}.ffn_norm.weight": "layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "layers.{}.mlp.down_proj.weight",
}


@dataclass(slots=True)
class GGUFWeights:
    """What a ``.gguf`` file holds, in our terms.

    Attributes:
        fields: its metadata, each value decoded with ``ReaderField.contents()``.
        config: the model shape (:func:`gguf_config`).
        state: fp32 tensors under :class:`~kvcache.engine.model.LlamaModel`'s
            names, dequantized, Q/K rows back in Hugging Face order.
        qtypes: the file's tensor types (``F32``, ``Q8_0``, ...), for reports.
    """

    fields: dict[str, Any]
    config: ModelConfig
    state: dict[str, torch.Tensor]
    qtypes: set[str]


def read_gguf(path: Path) -> GGUFWeights:
    """Read a Llama-family ``.gguf`` file: its metadata, config and dequantized weights.

    Raises:
        ConfigError: the gguf package is missing, the file is not readable
            GGUF, its config is not supported, or it holds an unknown tensor.
    """
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError as e:
        raise ConfigError(f"{path}: reading a .gguf file needs the gguf package: {_INSTALL}") from e
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # not a GGUF file, or truncated: the reader raises ValueError and friends
        raise ConfigError(f"{path}: not a readable GGUF file ({e})") from e
    fields: dict[str, Any] = {k: f.contents() for k, f in reader.fields.items()}
    # llama.cpp's converter writes no output.weight when the head is tied to the embedding.
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    config = gguf_config(fields, str(path), tied=tied)
    state: dict[str, torch.Tensor] = {}
    qtypes: set[str] = set()
    for t in reader.tensors:
        ours = _gguf_name(t.name)
        if ours is None:
            raise ConfigError(f"{path}: unsupported tensor {t.name!r}")
        qtypes.add(t.tensor_type.name)
        w = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))
        if ours.endswith("q_proj.weight"):
            w = unpermute_qk(w, config.num_attention_heads)
        elif ours.endswith("k_proj.weight"):
            w = unpermute_qk(w, config.num_key_value_heads)
        state[ours] = w
    return GGUFWeights(fields, config, state, qtypes)


def gguf_config(fields: dict[str, Any], source: str, *, tied: bool) -> ModelConfig:
    """The :class:`ModelConfig` of a GGUF file's decoded metadata (``llama.*`` keys).

    Args:
        fields: the metadata, each value decoded with ``ReaderField.contents()``.
        source: the path, named in error messages.
        tied: whether the file has no separate ``output.weight``.

    Raises:
        ConfigError: the architecture is not ``llama``, a key is missing, or the
            file uses RoPE scaling or partial rotary dimensions.
    """
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise ConfigError(f"{source}: architecture {arch!r} is not supported (llama only)")

    def key(name: str, default: Any = None) -> Any:
        value = fields.get(f"llama.{name}", default)
        if value is None:
            raise ConfigError(f"{source}: missing metadata llama.{name}")
        return value

    scaling = fields.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ConfigError(f"{source}: RoPE scaling {scaling!r} is not supported")
    hidden, heads = key("embedding_length"), key("attention.head_count")
    head_dim = fields.get("llama.attention.key_length") or hidden // heads
    if fields.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise ConfigError(f"{source}: partial rotary dimensions are not supported")
    tokens = fields.get("tokenizer.ggml.tokens")
    try:
        return ModelConfig(
            vocab_size=fields.get("llama.vocab_size") or (len(tokens) if tokens else key("vocab_size")),
            hidden_size=hidden,
            num_hidden_layers=key("block_count"),
            num_attention_heads=heads,
            num_key_value_heads=key("attention.head_count_kv", heads),
            head_dim=head_dim,
            intermediate_size=key("feed_forward_length"),
            rope_theta=_f32(key("rope.freq_base", 10000.0)),
            rms_norm_eps=_f32(key("attention.layer_norm_rms_epsilon")),
            tie_word_embeddings=tied,
            max_position_embeddings=key("context_length"),
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _f32(value: float) -> float:
    # GGUF stores these as float32: 1e-5 reads back as 9.99999974e-06. The
    # shortest decimal that round-trips in float32 is the value the model was
    # published with.
    return float(str(np.float32(value)))


def _gguf_name(name: str) -> str | None:
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        pattern = _GGUF_NAMES.get(f"blk.{{}}.{parts[2]}")
        return pattern.format(parts[1]) if pattern else None
    return None


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation, restoring Hugging Face's neox RoPE order.

    llama.cpp's converter reorders each head's rows from ``[2, D/2]`` (rows ``i``
    and ``i + D/2`` rotate together) to ``[D/2, 2]`` (rows ``2i`` and ``2i + 1``
    do), to suit its interleaved RoPE. ``w: [n_head * D, hidden]``.
    """
    out, hidden = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, hidden).transpose(1, 2).reshape(out, hidden)
