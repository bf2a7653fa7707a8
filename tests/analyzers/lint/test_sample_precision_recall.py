"""Lint on the project's sample traces: every injected breaker found, nothing else.

Precision: every clean prompt of ``sample_traces/agents.jsonl`` (each request of
a session without a breaker, as a request body and its system prompt as text)
gives zero findings. Recall: linting the trace finds each injected breaker
session with its catalogue code, and flags no clean session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcache.analyzers.lint.rule import LintContext
from kvcache.analyzers.lint.runner import lint_source, lint_trace, selected_rules
from kvcache.engine.traces.synth import SynthConfig, breaker_sessions

REPO = Path(__file__).resolve().parents[3]
AGENTS = REPO / "sample_traces" / "agents.jsonl"
# The sample's generator config (sample_traces/README.md).
CONFIG = SynthConfig(seed=10, orgs=3, users_per_org=5, sessions_per_user=3, min_turns=3, max_turns=6,
                     system_words=(200, 300), tools_per_org=(5, 6), breaker_rate=0.15)
CODE_FOR_BREAKER = {"timestamp": "KV101", "tool_order": "KV201", "json_keys": "KV202", "truncation": "KV501"}


def rows() -> list[dict]:
    return [json.loads(line) for line in AGENTS.read_text().splitlines()]


def test_the_config_matches_the_committed_sample() -> None:
    breakers = breaker_sessions(CONFIG)
    assert len(breakers) == 7
    assert {r["session_id"] for r in rows()} >= set(breakers)


def clean_requests() -> list[dict]:
    broken = breaker_sessions(CONFIG)
    return [r for r in rows() if r["session_id"] not in broken]


def as_body(r: dict, provider: str | None) -> dict:
    """The request as its provider's body: native fields as they are (system, tools,
    messages: Anthropic's shape), or an OpenAI Chat body with the system prompt as
    the first message and, as OpenAI advises for a shared prefix, a stable
    ``prompt_cache_key`` per org."""
    body = {k: v for k, v in r.items() if k in ("model", "system", "tools", "messages")}
    if provider == "openai":
        system = body.pop("system", None)
        if system is not None:
            body["messages"] = [{"role": "system", "content": system}, *body["messages"]]
        body["prompt_cache_key"] = f"{r['org']}-agent"
    return body


@pytest.mark.parametrize("provider", [None, "anthropic", "openai"])
def test_clean_requests_as_bodies_give_no_findings(provider: str | None) -> None:
    ctx = LintContext(provider=provider)
    found = []
    for r in clean_requests():
        text = json.dumps(as_body(r, provider), indent=2)
        found += [(r["request_id"], d.code, d.message) for d in lint_source(text, "body", f"{r['request_id']}.json", ctx)]
    assert found == []


def test_clean_system_prompts_as_text_and_templates_give_no_findings() -> None:
    systems = {r["system"] for r in clean_requests() if "system" in r}
    assert len(systems) >= 3  # one per org, at least
    found = []
    for text in systems:
        for kind, path in (("text", "system.md"), ("template", "system.j2")):
            found += [(kind, d.code, d.message) for d in lint_source(text, kind, path)]
    assert found == []


def test_linting_the_trace_finds_every_breaker_and_only_breakers() -> None:
    lines = rows()
    diags = lint_trace(str(AGENTS), selected_rules(), LintContext())
    by_session: dict[str, set[str]] = {}
    for d in diags:
        session = lines[d.line - 1]["session_id"]
        by_session.setdefault(session, set()).add(d.code)
    broken = breaker_sessions(CONFIG)
    # Recall: each injected breaker is reported with its catalogue code.
    for session, (kind, _turn) in broken.items():
        assert CODE_FOR_BREAKER[kind] in by_session.get(session, set()), (session, kind, by_session.get(session))
    # Precision: no session without a breaker is flagged.
    assert set(by_session) <= set(broken), sorted(set(by_session) - set(broken))
    # Every finding says what it costs.
    assert all(d.tokens_at_risk is not None and d.tokens_at_risk >= 0 for d in diags)
