"""A request as the engine sees it, and the result the engine reports for it."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvcache.engine.hashing import BlockHash


@dataclass(slots=True)
class Request:
    """One prompt to run through the cache.

    Token positions are *KV positions*. For token traces ``kv_prompt_tokens`` is the
    prompt length. For hash-id traces with hit cap ``none`` every hash id is a
    whole block, so ``kv_prompt_tokens = len(hash_ids) * block_size``.

    Attributes:
        block_keys: keys of the full blocks this request will write, prompt blocks
            first, then blocks filled during decode. Tokens without a key (a partial
            tail) are never cached.
        prompt_tokens: the prompt length that is reported (``input_length``).
        output_tokens: tokens generated; KV exists for ``prompt + output - 1`` tokens
            because the last sampled token is never computed.
        hit_cap_tokens: most tokens a lookup may hit. vLLM caps at
            ``prompt - 1`` so the last prompt token is recomputed for its logits.
        breakpoint_tokens: prompt lengths at which the request marks a cache
            breakpoint (Anthropic ``cache_control``); ``None``: automatic caching.
        segment_ends: where each rendered segment ends, in tokens (``None`` for
            token-id and hash-id traces); a provider's lookback walks these.
        billed_prompt_tokens, billed_cached_tokens: what the provider billed for
            this call, when the trace records it (passed through to the result).
        token_ids: the prompt's token ids followed by the recorded output tokens
            (when the trace records them); filled only when a model will run
            (``--compute``), since the engine itself needs only ``block_keys``.
    """

    request_id: str
    block_keys: list[BlockHash]
    prompt_tokens: int
    kv_prompt_tokens: int
    output_tokens: int
    hit_cap_tokens: int
    session_id: str | None = None
    org: str | None = None
    arrival: float = 0.0
    model: str | None = None
    cache_ttl: str | None = None
    breakpoint_tokens: list[int] | None = None
    segment_ends: list[int] | None = None
    billed_prompt_tokens: int | None = None
    billed_cached_tokens: int | None = None
    token_ids: list[int] | None = None
    num_computed_tokens: int = field(default=0)

    @property
    def num_kv_tokens(self) -> int:
        """Tokens whose KV is computed over the request's life (at least the prompt)."""
        return kv_token_count(self.kv_prompt_tokens, self.output_tokens)


def kv_token_count(prompt_tokens: int, output_tokens: int) -> int:
    """Tokens with KV after a request: ``P + N - 1``, since the last sampled token
    is never computed (and a request always generates at least one token)."""
    return prompt_tokens + max(output_tokens, 1) - 1


@dataclass(slots=True)
class RequestResult:
    """What the cache did for one request.

    ``blocks`` counts the full prompt blocks (the denominator of block_hit_rate);
    ``first_miss_block`` is the index of the first prompt block that missed, or
    ``None`` when every full prompt block hit. The billed fields repeat the
    request's, so that predictions and bills travel together. ``ttft_s`` (arrival
    to first output token) and ``e2e_s`` (arrival to last token) come from the
    scheduler's simulated clock; ``preemptions`` counts recompute preemptions.
    """

    request_id: str
    session_id: str | None
    org: str | None
    arrival: float
    prompt_tokens: int
    cached_tokens: int
    hit_blocks: int
    blocks: int
    first_miss_block: int | None
    rejected: bool = False
    billed_prompt_tokens: int | None = None
    billed_cached_tokens: int | None = None
    # Filled by the scheduler (simulated clock, seconds); ``None`` in sequential replay.
    ttft_s: float | None = None
    e2e_s: float | None = None
    preemptions: int = 0
