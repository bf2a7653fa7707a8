"""Engine configuration, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kvcache.engine.errors import ConfigError

HashAlgo = Literal["xxh3_128", "sha256"]
FreeOrder = Literal["current", "classic"]
HitCap = Literal["auto", "vllm", "none"]

HASH_ALGOS: tuple[str, ...] = ("xxh3_128", "sha256")
FREE_ORDERS: tuple[str, ...] = ("current", "classic")
HIT_CAPS: tuple[str, ...] = ("auto", "vllm", "none")

DEFAULT_BLOCK_SIZE = 16


@dataclass(slots=True)
class CacheConfig:
    """How the prefix cache behaves.

    Attributes:
        block_size: tokens per KV block (vLLM's default is 16).
        num_blocks: total blocks in the pool *including* vLLM's reserved null
            block 0, so ``num_blocks - 1`` are usable. ``None`` means unbounded.
        hash_algo: ``xxh3_128`` (fast default) or ``sha256`` (vLLM's default,
            bit-compatible with ``--prefix-caching-hash-algo sha256``).
        free_order: ``current`` (vLLM >= 0.28: freed unhashed blocks go to the
            head of the free queue) or ``classic`` (vLLM <= 0.27: every freed
            block goes to the tail).
        enable_caching: ``False`` turns prefix caching off (every lookup misses).
    """

    block_size: int = DEFAULT_BLOCK_SIZE
    num_blocks: int | None = None
    hash_algo: HashAlgo = "xxh3_128"
    free_order: FreeOrder = "current"
    enable_caching: bool = True

    def __post_init__(self) -> None:
        if type(self.block_size) is not int or self.block_size < 1:
            raise ConfigError(f"block size must be a positive integer, got {self.block_size!r}")
        if self.num_blocks is not None and (type(self.num_blocks) is not int or self.num_blocks < 2):
            raise ConfigError(
                f"--kv-blocks must be at least 2 (block 0 is vLLM's reserved null block), got {self.num_blocks!r}"
            )
        if self.hash_algo not in HASH_ALGOS:
            raise ConfigError(f"unknown hash {self.hash_algo!r}; choose one of {', '.join(HASH_ALGOS)}")
        if not isinstance(self.enable_caching, bool):
            raise ConfigError(f"enable_caching must be a bool, got {self.enable_caching!r}")
        if self.free_order not in FREE_ORDERS:
            raise ConfigError(f"unknown free order {self.free_order!r}; choose one of {', '.join(FREE_ORDERS)}")

    @property
    def usable_blocks(self) -> int | None:
        """Blocks a request can hold: all but the null block, or ``None`` if unbounded."""
        return None if self.num_blocks is None else self.num_blocks - 1
