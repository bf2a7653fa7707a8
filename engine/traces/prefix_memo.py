"""Reuse block hashes across the turns of a conversation.

An agent session re-sends its whole history on every call, so hashing each
prompt from scratch costs O(calls x history). Prompts are built from segments,
and a turn's segments usually start with the previous turn's. This memo keeps,
per session, the last prompt's segments, where each segment starts in tokens,
and the block keys; the next prompt reuses the keys of every full block inside
the common segment prefix and hashes only the rest, chained from the last
reused key. Block ``i``'s key depends only on tokens ``[0, (i + 1) * block)``,
so a reused key is exactly the key a full rehash would give.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from kvcache.engine.hashing import BlockHash, hash_token_blocks


@dataclass(slots=True)
class _Turn:
    segments: Sequence[object]
    keys: list[BlockHash]  # the prompt's full blocks only (never decode blocks)
    hashing: tuple[object, ...]  # what else the keys depend on: algo, salt, LoRA, vocabulary, block size


class PrefixHashMemo:
    """Per-session memory of the last prompt's block keys."""

    def __init__(self) -> None:
        self._last: dict[object, _Turn] = {}
        self.blocks_hashed = 0
        self.blocks_reused = 0

    def keys(
        self,
        session: object,
        segments: Sequence[object],
        pieces: Sequence[Sequence[int]],
        tail: Sequence[int],
        block_size: int,
        hashing: tuple[object, object, object, object],
    ) -> list[BlockHash]:
        """Keys of every full block of the prompt's tokens followed by ``tail``.

        Args:
            session: the conversation (segments are compared only within it).
            segments: the prompt's segments; ``pieces`` holds each one's token ids.
            tail: tokens after the prompt that are hashed too (recorded decode tokens).
            hashing: ``(algo, salt, lora, vocabulary)``; keys are reused only when
                all of it, and the block size, match the previous turn's.

        Only the tokens after the reused blocks are ever concatenated, so a turn
        costs O(new tokens), not O(history).
        """
        algo, salt, lora, _vocabulary = hashing
        context = (*hashing, block_size)
        lengths = [len(p) for p in pieces]
        reuse = 0
        prev = self._last.get(session)
        if prev is not None and prev.hashing == context:
            common_tokens = 0
            for a, b, n in zip(prev.segments, segments, lengths):
                if a is not b and a != b:
                    break
                common_tokens += n
            reuse = min(common_tokens // block_size, len(prev.keys))
        keys = list(prev.keys[:reuse]) if prev is not None and reuse else []
        # Concatenate from the segment holding the first token to hash.
        start = reuse * block_size
        first, offset = 0, 0
        while first < len(lengths) and offset + lengths[first] <= start:
            offset += lengths[first]
            first += 1
        rest = list(itertools.chain.from_iterable(pieces[first:]))[start - offset :]
        rest.extend(tail)
        parent = keys[-1] if keys else None
        keys.extend(hash_token_blocks(rest, block_size, algo, salt, lora, parent, reuse))  # type: ignore[arg-type]
        self.blocks_reused += reuse
        self.blocks_hashed += len(keys) - reuse
        self._last[session] = _Turn(segments, keys[: sum(lengths) // block_size], context)
        return keys
