"""Load a Llama-family model: ``tiny-random``, a ``.gguf`` file, or a Hugging Face directory.

Every source ends as a state dict in :class:`~kvcache.engine.model.LlamaModel`'s
naming (Hugging Face's without the ``model.`` prefix), assigned onto a model
built on the meta device so no memory is spent on a throwaway initialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kvcache.engine.errors import ConfigError
from kvcache.engine.gguf_weights import GGUFWeights, gguf_config, read_gguf, unpermute_qk
from kvcache.engine.model import LlamaModel
from kvcache.engine.model_config import ModelConfig
from kvcache.engine.model_tokenizer import ModelTokenizer

# GGUF reading lives in gguf_weights.py; importing it from here keeps working.
__all__ = [
    "GGUFWeights",
    "LoadedModel",
    "TINY_RANDOM",
    "build_model",
    "gguf_config",
    "load_model",
    "random_state_dict",
    "read_gguf",
    "unpermute_qk",
]

TINY_RANDOM = "tiny-random"
_INSTALL = "pip install 'kvcache[torch]'"


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
    gguf = read_gguf(path)
    try:
        model = build_model(gguf.config, gguf.state, dtype)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    fields = gguf.fields
    name = fields.get("general.name") or path.stem
    try:
        tokenizer, note = ModelTokenizer.from_gguf_fields(fields, name, str(path)), None
    except ConfigError as e:
        tokenizer, note = None, str(e)
    qtypes = "/".join(sorted(gguf.qtypes))
    source = f"GGUF file {path} ({qtypes} dequantized to {str(dtype).removeprefix('torch.')})"
    return LoadedModel(gguf.config, model, tokenizer, name, source, note)
