"""Chained block hashing, as in vLLM's ``hash_block_tokens``.

Each full block's hash covers its parent's hash, its tokens and its extra keys::

    h0 = H(NONE_HASH, tokens[0:16],  extra_keys_0)
    h1 = H(h0,        tokens[16:32], extra_keys_1)
    ...

so two prompts share block ``i`` only if they agree on every token before it.
Extra keys isolate tenants: the LoRA name goes on every block, the cache salt
(kvcache's org) on the first block only, exactly as vLLM orders them.

Two hash functions are offered and give identical hit results:

* ``xxh3_128`` (default): XXH3-128 over ``parent (16 bytes LE) + tokens (uint32 LE)
  + extra-key bytes``; integers as dict keys keep lookups fast.
* ``sha256``: vLLM's default, SHA-256 over ``pickle.dumps((parent, tuple(tokens),
  extra_keys), protocol=HIGHEST)``, seeded with vLLM's ``NONE_HASH`` (SHA-256 of the
  pickled string ``"vllm-none-hash"``), so digests match vLLM >= 0.33 with
  ``PYTHONHASHSEED`` unset.
"""

from __future__ import annotations

import hashlib
import pickle
from array import array
from collections.abc import Callable, Sequence

import xxhash

from kvcache.engine.config import HashAlgo

BlockHash = int | bytes

# vLLM's DEFAULT_NONE_HASH_SEED; fixed so that runs repeat (vLLM randomises it
# for xxhash unless PYTHONHASHSEED is set, which does not change hit counts).
NONE_HASH_SEED = "vllm-none-hash"

ExtraKeys = tuple[object, ...] | None


def _sha256_pickle(obj: object) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


SHA256_NONE_HASH: bytes = _sha256_pickle(NONE_HASH_SEED)
XXH3_NONE_HASH: int = xxhash.xxh3_128_intdigest(NONE_HASH_SEED.encode())


def _extra_bytes(extra_keys: ExtraKeys) -> bytes:
    # Length-prefixed repr keeps ("a", "bc") and ("ab", "c") apart.
    if not extra_keys:
        return b""
    parts = [repr(k).encode() for k in extra_keys]
    return b"".join(len(p).to_bytes(4, "little") + p for p in parts)


def hash_block_xxh3(parent: int | None, tokens: Sequence[int], extra_keys: ExtraKeys = None) -> int:
    """XXH3-128 block hash as an int (kvcache's fast default)."""
    p = XXH3_NONE_HASH if parent is None else parent
    data = p.to_bytes(16, "little") + array("I", tokens).tobytes() + _extra_bytes(extra_keys)
    return xxhash.xxh3_128_intdigest(data)


def hash_block_sha256(parent: bytes | None, tokens: Sequence[int], extra_keys: ExtraKeys = None) -> bytes:
    """vLLM's default ``sha256`` block hash, bit for bit."""
    p = SHA256_NONE_HASH if parent is None else parent
    return _sha256_pickle((p, tuple(tokens), extra_keys or None))


HASHERS: dict[str, Callable[..., BlockHash]] = {
    "xxh3_128": hash_block_xxh3,
    "sha256": hash_block_sha256,
}


def block_extra_keys(block_index: int, cache_salt: str | None, lora_name: str | None) -> ExtraKeys:
    """Extra keys for one block, in vLLM's order: LoRA name, then salt (block 0 only)."""
    keys: list[object] = []
    if lora_name:
        keys.append(lora_name)
    if cache_salt and block_index == 0:
        keys.append(cache_salt)
    return tuple(keys) if keys else None


def hash_token_blocks(
    tokens: Sequence[int],
    block_size: int,
    algo: HashAlgo = "xxh3_128",
    cache_salt: str | None = None,
    lora_name: str | None = None,
    parent: BlockHash | None = None,
    start_block: int = 0,
) -> list[BlockHash]:
    """Hash every *full* block of ``tokens``; a partial tail block is never hashed.

    Args:
        tokens: the token ids, starting at block ``start_block``.
        parent: hash of block ``start_block - 1`` (``None`` at the start of a prompt),
            so a caller can extend a chain without rehashing its prefix.
    """
    fn = HASHERS[algo]
    out: list[BlockHash] = []
    n_full = len(tokens) // block_size
    if algo == "xxh3_128" and not lora_name and not cache_salt:
        # Hot path: one bytes buffer for the whole prompt, sliced per block.
        buf = array("I", tokens).tobytes()
        step = 4 * block_size
        digest = xxhash.xxh3_128_intdigest
        p = XXH3_NONE_HASH if parent is None else parent
        for i in range(n_full):
            p = digest(p.to_bytes(16, "little") + buf[i * step : (i + 1) * step])
            out.append(p)
        return out
    p = parent
    for i in range(n_full):
        extra = block_extra_keys(start_block + i, cache_salt, lora_name)
        p = fn(p, tokens[i * block_size : (i + 1) * block_size], extra)
        out.append(p)
    return out
