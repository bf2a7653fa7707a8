"""Hosted-provider cache rules: minimum prefix, granularity, TTL, breakpoints, isolation."""

from __future__ import annotations

import pytest

from kvcache.engine.errors import ConfigError
from kvcache.engine.provider_cache import ProviderReplayer, ProviderRules
from kvcache.engine.request import Request

BS = 16


def req(rid: str, blocks: list[int], arrival: float, org: str | None = None, model: str | None = None,
        extra_tokens: int = 0) -> Request:
    n = len(blocks) * BS + extra_tokens
    return Request(rid, list(blocks), n, n, 1, n - 1, session_id="s", org=org, arrival=arrival, model=model)


def cached(provider: str, reqs: list[Request], ttl: str | None = None) -> list[int]:
    return [r.cached_tokens for r in ProviderReplayer(provider, BS, ttl).run(reqs)]


@pytest.mark.parametrize(
    ("provider", "tokens", "expected"),
    [("openai", 1023, 0), ("openai", 1024, 1024), ("openai", 1151, 1024), ("openai", 1152, 1152),
     ("deepseek", 63, 0), ("deepseek", 130, 128), ("anthropic", 1023, 0), ("anthropic", 1500, 1500),
     ("gemini", 1000, 0), ("gemini", 1030, 1030)],
)
def test_minimum_prefix_and_granularity(provider: str, tokens: int, expected: int) -> None:
    assert ProviderRules.load(provider).billable_read(tokens) == expected


def test_minimum_prefix_follows_the_model() -> None:
    assert ProviderRules.load("anthropic", "claude-opus-4-5-20251101").min_prefix_tokens == 4096
    assert ProviderRules.load("anthropic", "claude-sonnet-4-5").min_prefix_tokens == 1024
    assert ProviderRules.load("anthropic", "claude-sonnet-4-6").min_prefix_tokens == 2048


def test_openai_reads_the_longest_cached_prefix_in_128_token_steps() -> None:
    base = list(range(100))  # 1600 tokens
    reqs = [req("a", base, 0), req("b", base[:90] + [999], 10), req("c", base + [5, 6], 20)]
    # b shares 90 blocks = 1440 tokens -> 1024 + 3*128 = 1408; c shares all 100 = 1600 -> 1536.
    assert cached("openai", reqs) == [0, 1408, 1536]


def test_anthropic_reads_only_what_an_earlier_request_wrote() -> None:
    system = list(range(80))  # 1280 tokens shared by two sessions, but never a breakpoint
    reqs = [req("a1", system + [100, 101], 0), req("b1", system + [200], 5),
            req("a2", system + [100, 101, 102, 103], 10)]
    # b1 shares 80 blocks with a1, but a1 wrote only at its end (block 81): no read.
    # a2 extends a1's whole prompt: it reads a1's 82 blocks.
    assert cached("anthropic", reqs) == [0, 0, 82 * BS]


def test_ttl_expiry_and_refresh() -> None:
    p = list(range(100))
    # 5-minute TTL: a 299 s gap reads, then the read refreshes the entry; a 301 s gap misses.
    reqs = [req("a", p, 0), req("b", p + [1], 299), req("c", p + [1, 2], 299 + 299), req("d", p + [1, 2, 3], 598 + 301)]
    assert cached("anthropic", reqs) == [0, 1600, 1616, 0]
    assert cached("anthropic", reqs, ttl="1h") == [0, 1600, 1616, 1632]


def test_orgs_and_models_are_isolated() -> None:
    p = list(range(100))
    reqs = [req("a", p, 0, org="x", model="gpt-4o"), req("b", p, 1, org="y", model="gpt-4o"),
            req("c", p, 2, org="x", model="gpt-4.1"), req("d", p, 3, org="x", model="gpt-4o")]
    assert cached("openai", reqs) == [0, 0, 0, 1536]


def test_bad_names() -> None:
    with pytest.raises(ConfigError, match="unknown provider"):
        ProviderReplayer("azure", BS)
    with pytest.raises(ConfigError, match="has no TTL"):
        ProviderReplayer("anthropic", BS, ttl="24h")


def test_a_request_ttl_hint_applies_unless_overridden() -> None:
    p = list(range(100))
    reqs = [req("a", p, 0), req("b", p + [1], 1000)]
    for r in reqs:
        r.cache_ttl = "1h"
    assert cached("anthropic", reqs) == [0, 1600]
    assert cached("anthropic", reqs, ttl="default") == [0, 0]


def test_explicit_breakpoints_write_where_the_markers_are() -> None:
    system = list(range(80))  # 1280 tokens, marked with cache_control in both sessions
    a = req("a", system + [100, 101], 0)
    b = req("b", system + [200], 5)
    for r in (a, b):
        r.breakpoint_tokens = [len(system) * BS, r.prompt_tokens]
    # b reads the system prompt a wrote at its first marker (not a's whole prompt).
    assert cached("anthropic", [a, b]) == [0, 80 * BS]
    # Without markers (automatic caching) only the end of a's prompt was written.
    assert cached("anthropic", [req("a", system + [100, 101], 0), req("b", system + [200], 5)]) == [0, 0]


def test_a_read_never_reaches_past_the_last_breakpoint() -> None:
    p = list(range(100))
    a = req("a", p, 0)
    b = req("b", p + [7], 1)
    b.breakpoint_tokens = [70 * BS]  # b marks only its first 70 blocks
    a.breakpoint_tokens = [70 * BS, 100 * BS]
    assert cached("anthropic", [a, b]) == [0, 70 * BS]


def test_lookback_limits_how_far_back_a_breakpoint_finds_a_write() -> None:
    # a writes at the end of its 1600-token prompt. b appends 30 one-block
    # segments (60 segment ends with headers) before its only breakpoint: with a
    # 20-block lookback (40 segment ends) the old write is out of reach.
    p = list(range(100))
    a = req("a", p, 0)
    a.segment_ends = [16 * i for i in range(1, 101)]
    near = req("b", p + list(range(1000, 1010)), 1)
    near.segment_ends = a.segment_ends + [1600 + 16 * i for i in range(1, 11)]
    far = req("c", p + list(range(2000, 2060)), 2)
    far.segment_ends = a.segment_ends + [1600 + 16 * i for i in range(1, 61)]
    assert cached("anthropic", [a, near]) == [0, 1600]
    assert cached("anthropic", [req("a", p, 0), far]) == [0, 0]
    # A token-id trace has no segment boundaries: any earlier write is reachable.
    unsegmented = req("c", p + list(range(2000, 2060)), 2)
    assert cached("anthropic", [req("a", p, 0), unsegmented]) == [0, 1600]


def test_openai_breakpoint_caching_from_gpt_5_6() -> None:
    rules = ProviderRules.load("openai", "gpt-5.6")
    assert (rules.mode, rules.ttl_seconds, rules.lookback_blocks, rules.granularity_tokens) == ("breakpoints", 1800.0, 50, 1)
    assert ProviderRules.load("openai", "gpt-5.1").mode == "automatic"
    system = list(range(80))
    # Breakpoint caching: a second conversation with the same system prompt reads
    # nothing (only prompt ends were written), unlike automatic caching.
    reqs = [req("a", system + [1], 0, model="gpt-5.6"), req("b", system + [2], 5, model="gpt-5.6")]
    assert cached("openai", reqs) == [0, 0]
    reqs = [req("a", system + [1], 0, model="gpt-5.1"), req("b", system + [2], 5, model="gpt-5.1")]
    assert cached("openai", reqs) == [0, 1280]


def test_every_fact_has_a_source_and_a_date() -> None:
    import json
    from importlib import resources

    data = json.loads(resources.files("kvcache.engine").joinpath("data/providers.json").read_text())
    entries = [*data["providers"].values(), data["vllm"]]
    entries += [o for e in data["providers"].values() for o in e.get("model_overrides", {}).values() if "same_as" not in o]
    for entry in entries:
        assert entry["source"] and entry["as_of"]
