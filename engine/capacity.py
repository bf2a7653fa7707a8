"""KV capacity: blocks from ``--kv-blocks`` or from ``--kv-memory`` and a model shape.

bytes per block = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes x block_size

As in vLLM, the block count derived from memory *includes* the reserved null
block, so ``num_blocks - 1`` blocks hold KV.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from kvcache.engine.errors import ConfigError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "float8": 1}
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(slots=True, frozen=True)
class ModelShape:
    name: str
    num_hidden_layers: int
    num_key_value_heads: int
    head_dim: int
    dtype: str
    source: str

    def bytes_per_block(self, block_size: int, dtype: str | None = None) -> int:
        """KV bytes one block of ``block_size`` tokens takes across all layers."""
        dt = dtype or self.dtype
        if dt not in DTYPE_BYTES:
            raise ConfigError(f"unknown KV dtype {dt!r}; choose one of {', '.join(DTYPE_BYTES)}")
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * DTYPE_BYTES[dt] * block_size


@lru_cache(maxsize=1)
def _shape_data() -> dict[str, Any]:
    text = resources.files("kvcache.engine").joinpath("data/model_shapes.json").read_text()
    return json.loads(text)


def model_shape_names() -> list[str]:
    return sorted(_shape_data()["models"])


def get_model_shape(name: str) -> ModelShape:
    """Look a model up in ``engine/data/model_shapes.json`` (case-insensitive)."""
    models = _shape_data()["models"]
    key = name.lower()
    if key not in models:
        raise ConfigError(f"unknown model shape {name!r}; known: {', '.join(model_shape_names())}")
    m = models[key]
    return ModelShape(key, m["num_hidden_layers"], m["num_key_value_heads"], m["head_dim"], m["dtype"], m["source"])


def parse_memory(text: str) -> int:
    """Bytes in a size such as ``80GiB``, ``80GB``, ``512MiB`` or a plain ``1073741824``.

    ``KB/MB/GB/TB`` are powers of 10, ``KiB/MiB/GiB/TiB`` powers of 2.
    """
    m = _MEMORY_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read memory size {text!r}; expected a number and a unit such as 80GiB or 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def resolve_num_blocks(
    block_size: int,
    kv_blocks: int | None = None,
    kv_memory: str | None = None,
    model_shape: str | None = None,
    kv_dtype: str | None = None,
) -> int | None:
    """Total blocks (null block included) for the options given; ``None`` is unbounded."""
    if kv_blocks is not None and kv_memory is not None:
        raise ConfigError("give either --kv-blocks or --kv-memory, not both")
    if kv_blocks is not None:
        return kv_blocks
    if kv_memory is None:
        return None
    if model_shape is None:
        raise ConfigError("--kv-memory needs --model-shape to know the bytes per block")
    per_block = get_model_shape(model_shape).bytes_per_block(block_size, kv_dtype)
    n = parse_memory(kv_memory) // per_block
    if n < 2:
        raise ConfigError(f"{kv_memory} holds {n} blocks of {per_block} bytes; need at least 2")
    return n
