"""Setting up ``--compute``: the model, its tokenizer, and a pool it can fill.

The scheduler's block pool becomes real memory here: one K and one V tensor of
``[num_blocks, block_size, Hkv, D]`` per layer. Its size comes from
``--kv-blocks``, from ``--kv-memory`` at the loaded model's own KV bytes per
block, or, with neither, from :data:`DEFAULT_COMPUTE_KV_MEMORY`: a pool must be
finite once it holds tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvcache.engine.errors import ConfigError

TORCH_HINT = "pip install 'kvcache[torch]'"
DEFAULT_COMPUTE_KV_MEMORY = 256 * 2**20  # bytes of K+V for --compute without a pool size
COMPUTE_DTYPE_BYTES = 4  # the model runs in fp32 on CPU (exactness over speed)


def require_torch() -> None:
    """Raise a one-line ConfigError naming the extra when torch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(f"--compute runs a real model and needs torch: {TORCH_HINT}") from None


@dataclass(slots=True)
class ComputeModel:
    """A loaded model and what the replay needs to know about it."""

    loaded: Any  # kvcache.engine.weights.LoadedModel
    tokenizer_name: str | None  # registered encoder name when the model brings a tokenizer

    @property
    def name(self) -> str:
        return str(self.loaded.name)

    def kv_bytes_per_block(self, block_size: int) -> int:
        c = self.loaded.config
        return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * COMPUTE_DTYPE_BYTES * block_size


def load_compute_model(spec: str, seed: int = 0) -> ComputeModel:
    """Load ``tiny-random``, a ``.gguf`` file or a Hugging Face directory.

    A model that brings its own tokenizer has it registered (see
    :func:`kvcache.engine.traces.tokenizer.register_encoder`) so traces of text
    are tokenized the way the model expects.
    """
    require_torch()
    from kvcache.engine.traces.tokenizer import register_encoder
    from kvcache.engine.weights import load_model

    loaded = load_model(spec, seed=seed)
    tok_name = None
    if loaded.tokenizer is not None:
        tok_name = f"model:{loaded.name}"
        tok = loaded.tokenizer
        # Special-token strings inside trace text stay text, as with the built-in tokenizers.
        register_encoder(tok_name, lambda text: tok.encode(text, special=False))
    return ComputeModel(loaded, tok_name)


def compute_pool_blocks(model: ComputeModel, block_size: int, kv_blocks: int | None, kv_memory_bytes: int | None) -> int:
    """Blocks in the pool (null block included), as vLLM sizes it from memory."""
    if kv_blocks is not None:
        return kv_blocks
    memory = kv_memory_bytes if kv_memory_bytes is not None else DEFAULT_COMPUTE_KV_MEMORY
    blocks = memory // model.kv_bytes_per_block(block_size)
    if blocks < 2:
        raise ConfigError(
            f"{memory:,} bytes hold {blocks} block(s) of {model.kv_bytes_per_block(block_size):,} bytes "
            f"for {model.name}; at least 2 are needed (block 0 is vLLM's null block)"
        )
    return int(blocks)
