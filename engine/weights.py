"""Load a Llama-family model: ``tiny-random``, a ``.gguf`` file, or a Hugging Face directory.

Every source ends as a state dict in :class:`~kvcache.engine.model.LlamaModel`'s
naming (Hugging Face's without the ``model.`` prefix), assigned onto a model
built on the meta device so no memory is spent on a throwaway initialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvcache.engine.errors import ConfigError
from kvcache.engine.model import LlamaModel
from kvcache.engine.model_config import ModelConfig
from kvcache.engine.model_tokenizer import ModelTokenizer

TINY_RANDOM = "tiny-random"
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
class LoadedModel:
    """A model ready to run.

    Attributes:
        config: its shape.
        model: the weights, in eval mode.
        tokenizer: its own tokenizer, or ``None`` (tiny-random, or none shipped).
        name: a short label for reports.
        source: where it came from, in words.
        tokenizer_note: why ``tokenizer`` is ``None``, when it is.
    """

    config: ModelConfig
    model: LlamaModel
    tokenizer: ModelTokenizer | None
    name: str
    source: str
    tokenizer_note: str | None = None


def load_model(spec: str, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> LoadedModel:
    """Load ``tiny-random``, a ``.gguf`` file or a Hugging Face checkpoint directory.

    Args:
        spec: ``tiny-random``, a path to a Llama-family ``.gguf`` file, or a
            directory with ``config.json`` and ``*.safetensors``.
        dtype: the dtype of the weights once loaded (quantized GGUF tensors are
            dequantized to fp32 first).
        seed: the seed of ``tiny-random``'s weights; ignored otherwise.

    Raises:
        ConfigError: the path is missing or unreadable, the model is not
            Llama-family, or a needed package is not installed.
    """
    if spec == TINY_RANDOM:
        config = ModelConfig.tiny_random()
        model = build_model(config, random_state_dict(config, seed), dtype)
        source = f"random weights (seed {seed})"
        return LoadedModel(config, model, None, TINY_RANDOM, source, "tiny-random has no tokenizer")
    path = Path(spec)
    if path.is_dir():
        return _load_hf_dir(path, dtype)
    if path.is_file():
        return _load_gguf(path, dtype)
    raise ConfigError(f"{spec}: no such file or directory (expected {TINY_RANDOM}, a .gguf file or a model directory)")


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype) -> LlamaModel:
    """A :class:`LlamaModel` holding exactly ``state`` (our names), cast to ``dtype``.

    Raises:
        ConfigError: a tensor is missing, unexpected, or has the wrong shape.
    """
    model = LlamaModel(config, device="meta")
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ConfigError(f"checkpoint does not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ConfigError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}, expected {shape}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def random_state_dict(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random weights: the same ``seed`` gives the same tensors on any machine.

    numpy's PCG64 stream is platform independent. Linear weights have std
    ``1/sqrt(fan_in)`` and norms are ``1 ± 0.1`` so activations stay O(1) and
    attention is far from uniform: a wrong mask or position changes the logits.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    state: dict[str, torch.Tensor] = {}
    for name, p in LlamaModel(config, device="meta").named_parameters():
        noise = rng.standard_normal(tuple(p.shape), dtype=np.float32)
        if p.dim() == 1:  # an RMSNorm weight
            noise = 1.0 + 0.1 * noise
        elif not name.startswith("embed_tokens"):
            noise = noise / np.float32(np.sqrt(p.shape[1]))
        state[name] = torch.from_numpy(noise)
    return state


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation, restoring Hugging Face's neox RoPE order.

    llama.cpp's converter reorders each head's rows from ``[2, D/2]`` (rows ``i``
    and ``i + D/2`` rotate together) to ``[D/2, 2]`` (rows ``2i`` and ``2i + 1``
    do), to suit its interleaved RoPE. ``w: [n_head * D, hidden]``.
    """
    out, hidden = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, hidden).transpose(1, 2).reshape(out, hidden)


def _load_hf_dir(path: Path, dtype: torch.dtype) -> LoadedModel:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ConfigError(f"{path}: reading safetensors needs the safetensors package: {_INSTALL}") from e
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path}: no config.json (expected a Hugging Face model directory)")
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{cfg_path}: not valid JSON ({e})") from e
    config = ModelConfig.from_hf(raw, str(cfg_path))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{path}: no *.safetensors files")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise ConfigError(f"{f}: cannot read safetensors ({e})") from e
        for key, t in tensors.items():
            if key.endswith("rotary_emb.inv_freq"):
                continue  # older checkpoints saved this derived buffer
            state[key.removeprefix("model.")] = t
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # some exporters save the tied copy too
    try:
        model = build_model(config, state, dtype)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    name = path.resolve().name
    tokenizer = ModelTokenizer.from_hf_dir(path, name, raw)
    note = None if tokenizer else f"{path} has no tokenizer.json"
    source = f"Hugging Face checkpoint {path} ({len(files)} safetensors files)"
    return LoadedModel(config, model, tokenizer, name, source, note)


def _load_gguf(path: Path, dtype: torch.dtype) -> LoadedModel:
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
    try:
        model = build_model(config, state, dtype)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    name = fields.get("general.name") or path.stem
    try:
        tokenizer, note = ModelTokenizer.from_gguf_fields(fields, name, str(path)), None
    except ConfigError as e:
        tokenizer, note = None, str(e)
    source = f"GGUF file {path} ({'/'.join(sorted(qtypes))} dequantized to {str(dtype).removeprefix('torch.')})"
    return LoadedModel(config, model, tokenizer, name, source, note)


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
