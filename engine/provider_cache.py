"""Hosted providers' prompt caches: minimum prefix, granularity, TTL and breakpoints.

vLLM's block pool (the default) models a server you run: capacity and LRU decide
what stays. A hosted provider's cache is different: capacity is the provider's
problem, and what a user sees is decided by rules (``engine/data/providers.json``,
from ``reference/providers.md``):

* **automatic** providers (OpenAI, Gemini, DeepSeek) cache every prompt prefix;
  a read is the longest cached prefix, then rounded: nothing below the minimum
  prefix, and OpenAI counts 1024 tokens plus whole 128-token increments;
* **breakpoint** providers (Anthropic) write entries only at breakpoints: the
  request's ``cache_control`` markers when the log has them (a request's
  ``breakpoint_tokens``), else automatic caching's one breakpoint at the end of
  the prompt. A request reads the longest prefix that an earlier request
  *wrote*, up to its own last breakpoint (typically the previous turn's whole
  prompt), and writes at its breakpoints for the next one;
* entries expire ``ttl`` seconds after they were last written or read (the TTL
  of the request that did so), on the requests' arrival clock; caches are
  isolated per org and per model;
* minimum prefixes and granularity are in the provider's tokens: when a call's
  billed prompt length is known, kvcache's token counts are converted with it
  before rounding.

Approximations, said in the replay notes: prefixes are matched on the engine's
blocks (16 tokens by default), so a read can fall up to one block short of the
provider's exact count; Anthropic's 20-block lookback walks kvcache's segments
(two per message), not the API's content blocks exactly; outputs are cached only
once a later prompt carries them.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from kvcache.engine.errors import ConfigError
from kvcache.engine.replay import ReplayStats
from kvcache.engine.request import Request, RequestResult

PROVIDERS: tuple[str, ...] = ("anthropic", "openai", "gemini", "deepseek")


@lru_cache(maxsize=1)
def _facts() -> dict[str, Any]:
    return json.loads(resources.files("kvcache.engine").joinpath("data/providers.json").read_text())["providers"]


def _by_model(table: dict[str, Any], model: str | None) -> Any:
    """The entry for the longest key that prefixes the model name, else ``default``."""
    if model:
        name = model.lower().rsplit("/", 1)[-1]
        for key in sorted((k for k in table if k != "default"), key=len, reverse=True):
            if name.startswith(key):
                return table[key]
    return table["default"]


@dataclass(slots=True, frozen=True)
class ProviderRules:
    """One provider's caching rules for one model."""

    name: str
    mode: str  # "automatic" or "breakpoints"
    min_prefix_tokens: int
    granularity_tokens: int
    first_increment_tokens: int
    ttl_seconds: float
    lookback_blocks: int | None = None  # breakpoint mode: how far back a read may look

    @classmethod
    def load(cls, name: str, model: str | None = None, ttl: str | None = None) -> "ProviderRules":
        if name not in PROVIDERS:
            raise ConfigError(f"unknown provider {name!r}; choose vllm or one of {', '.join(PROVIDERS)}")
        f = _facts()[name]
        override = _by_model(f.get("model_overrides", {}) | {"default": None}, model)
        if override is not None:  # e.g. OpenAI's breakpoint caching from GPT-5.6 on
            override = f["model_overrides"][override["same_as"]] if "same_as" in override else override
            f = {**f, **override}
        ttls = f["ttl_seconds"]
        if ttl is not None and ttl not in ttls:
            if override is None:
                raise ConfigError(f"{name} has no TTL {ttl!r}; choose one of {', '.join(ttls)}")
            ttl = None  # a model whose rules know one TTL keeps it (e.g. GPT-5.6's 30 minutes)
        return cls(name, f["mode"], _by_model(f["min_prefix_tokens"], model), f["granularity_tokens"],
                   f.get("first_increment_tokens", 0), float(ttls[ttl or "default"]), f.get("lookback_blocks"))

    def billable_read(self, tokens: int) -> int:
        """The cached tokens a provider reports for a matched prefix of ``tokens``."""
        if tokens < self.min_prefix_tokens:
            return 0
        g, first = self.granularity_tokens, self.first_increment_tokens
        if first:
            return first + (tokens - first) // g * g if tokens >= first else 0
        return tokens // g * g


class ProviderReplayer:
    """Replays requests against a hosted provider's cache rules.

    Args:
        provider: one of :data:`PROVIDERS`.
        block_size: the engine block the prompts were hashed with.
        ttl: a TTL name from the facts file (``1h`` for Anthropic, ``24h`` for
            OpenAI) for every request; ``None`` uses each request's own
            ``cache_ttl`` when the log recorded one the provider knows, else
            the provider's default.
    """

    implementation = "provider"

    def __init__(self, provider: str, block_size: int, ttl: str | None = None) -> None:
        self.provider = provider
        self.block_size = block_size
        self.ttl = ttl
        ProviderRules.load(provider, None, ttl)  # fail early on a bad name or TTL
        self.stats = ReplayStats()
        self.breakpoint_models: set[str | None] = set()  # models replayed with breakpoint caching
        # (org, model, block key) -> when the entry expires
        self._entries: dict[tuple[Any, Any, Any], float] = {}
        self._pruned_at = float("-inf")

    def _rules(self, req: Request) -> ProviderRules:
        ttl = self.ttl
        if ttl is None and req.cache_ttl in _facts()[self.provider]["ttl_seconds"]:
            ttl = req.cache_ttl
        return _rules_cached(self.provider, req.model, ttl)

    def run(self, requests: Iterable[Request]) -> Iterator[RequestResult]:
        bs = self.block_size
        entries = self._entries
        for req in requests:
            rules = self._rules(req)
            now, ttl = req.arrival, rules.ttl_seconds
            scope = (req.org, req.model)
            keys = req.block_keys[: req.kv_prompt_tokens // bs]
            # The provider's thresholds are in its own tokens: convert ours with
            # the call's billed prompt length when the log has it.
            ratio = req.billed_prompt_tokens / req.prompt_tokens if req.billed_prompt_tokens and req.prompt_tokens else 1.0

            def alive(k: Any) -> bool:
                expiry = entries.get((*scope, k))
                return expiry is not None and now <= expiry

            if rules.mode == "automatic":
                hit = 0
                while hit < len(keys) and alive(keys[hit]):
                    hit += 1
            else:  # breakpoints: the longest prefix some earlier request wrote
                self.breakpoint_models.add(req.model)
                marks = req.breakpoint_tokens or [req.kv_prompt_tokens]
                writes = [min(t, req.kv_prompt_tokens) // bs for t in marks]
                hit = _breakpoint_read(keys, marks, writes, req.segment_ends, rules.lookback_blocks, bs, alive)
            billable = rules.billable_read(round(hit * bs * ratio))
            cached = min(round(billable / ratio), req.prompt_tokens)
            # Writes and reads refresh the entries they touch; each entry keeps
            # the TTL of the request that last wrote or read it.
            expiry = now + ttl
            if rules.mode == "automatic":
                for k in keys:
                    entries[(*scope, k)] = expiry
            else:
                if hit:
                    entries[(*scope, keys[hit - 1])] = expiry
                for b in writes:  # one entry per breakpoint long enough to cache
                    if b and b * bs * ratio >= rules.min_prefix_tokens:
                        entries[(*scope, keys[b - 1])] = expiry
            self._prune(now)
            n = len(keys)
            yield RequestResult(
                req.request_id, req.session_id, req.org, req.arrival, req.prompt_tokens, cached,
                hit, n, hit if hit < n else None, False, req.billed_prompt_tokens, req.billed_cached_tokens,
            )

    def _prune(self, now: float) -> None:
        """Forget expired entries now and then, so memory follows the live cache."""
        if now - self._pruned_at < 300:
            return
        self._pruned_at = now
        dead = [k for k, expiry in self._entries.items() if now > expiry]
        for k in dead:
            del self._entries[k]
        self.stats.evicted_blocks += len(dead)


def _breakpoint_read(
    keys: list[Any], marks: list[int], writes: list[int], segment_ends: list[int] | None,
    lookback: int | None, bs: int, alive: Any,
) -> int:
    """Blocks read by a breakpoint request: the longest earlier write it can reach.

    Each breakpoint looks for an entry at its own position, then walks back
    ``lookback`` content blocks. kvcache's content blocks are its segments, and
    each message is a header and a body segment, so the walk covers
    ``2 * lookback`` segment ends. Without segment boundaries (token-id traces)
    or a lookback rule, any earlier write up to the last breakpoint is reachable.
    """
    if lookback is None or not segment_ends:
        top = min(max(writes), len(keys))
        return next((i + 1 for i in range(top - 1, -1, -1) if alive(keys[i])), 0)
    hit = 0
    for mark in marks:
        j = bisect.bisect_right(segment_ends, mark)  # segment ends at or before the mark
        for pos in reversed(segment_ends[max(0, j - 2 * lookback) : j]):
            b = min(pos // bs, len(keys))
            if b <= hit:
                break  # nothing longer can come from this breakpoint
            if b and alive(keys[b - 1]):
                hit = b
                break
    return hit


@lru_cache(maxsize=512)
def _rules_cached(provider: str, model: str | None, ttl: str | None) -> ProviderRules:
    return ProviderRules.load(provider, model, ttl)
