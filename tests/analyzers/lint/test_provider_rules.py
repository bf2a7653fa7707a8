"""KV4xx (provider cache controls): correct bodies from the providers' docs stay silent.

The fixtures test each rule alone; here every KV4 rule runs over realistic,
correct request bodies (the documented examples, with their placeholders
filled in to a realistic length), and must report nothing. The provider a
body is for is inferred from its shape.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from kvcache.analyzers.lint.provider_blocks import anthropic_blocks, markers
from kvcache.analyzers.lint.provider_body import body_provider, provider_fact, provider_rules
from kvcache.analyzers.lint.rule import LintContext
from kvcache.analyzers.lint.runner import lint_source

EPH = {"type": "ephemeral"}
EPH_1H = {"type": "ephemeral", "ttl": "1h"}


def clauses(n: int) -> str:
    """About 15 tokens per clause: a long, stable document."""
    clause = "The supplier shall deliver goods within fourteen days of each order."
    return " ".join(f"Clause {i}. {clause}" for i in range(n))


def tool(name: str, description: str, cache: dict | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "description": description,
                         "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}
    if cache:
        t["cache_control"] = cache
    return t


def agent_turns(n_calls: int) -> list[dict[str, Any]]:
    """A user request, an assistant turn with parallel tool calls, and their results."""
    return [
        {"role": "user", "content": [{"type": "text", "text": "Why does the login test fail?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": "read_file",
                                           "input": {"path": f"src/m{i}.py"}} for i in range(n_calls)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": f"def f{i}(): ..."}
                                     for i in range(n_calls)]},
    ]


CORRECT_BODIES: dict[str, dict[str, Any]] = {
    "anthropic: a legal agreement cached in the system prompt": {
        "model": "claude-opus-4-6", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are an AI assistant tasked with analyzing legal documents."},
                   {"type": "text", "text": clauses(320), "cache_control": EPH}],
        "messages": [{"role": "user", "content": "What are the key terms and conditions in this agreement?"}],
    },
    "anthropic: cached tool definitions": {
        "model": "claude-sonnet-4-5", "max_tokens": 1024,
        "tools": [tool(f"lookup_{i}", clauses(4)) for i in range(20)]
        + [tool("get_time", "Get the current time in a given time zone", EPH)],
        "messages": [{"role": "user", "content": "What is the weather and time in New York?"}],
    },
    "anthropic: a multi-turn conversation": {
        "model": "claude-sonnet-4-5", "max_tokens": 1024,
        "system": [{"type": "text", "text": clauses(100), "cache_control": EPH}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Can you tell me about the solar system?"}]},
            {"role": "assistant", "content": "Certainly! The solar system is the collection of celestial bodies."},
            {"role": "user", "content": [{"type": "text", "text": "Good to know."},
                                         {"type": "text", "text": "Tell me more about Mars.", "cache_control": EPH}]},
        ],
    },
    "anthropic: tools, instructions, context and conversation, four breakpoints": {
        "model": "claude-sonnet-4-5", "max_tokens": 1024,
        "tools": [tool("search_documents", "Search through the knowledge base"),
                  tool("get_document", "Retrieve a specific document by ID", EPH)],
        "system": [{"type": "text", "text": "You are a helpful research assistant.", "cache_control": EPH},
                   {"type": "text", "text": "# Knowledge Base Context\n\n" + clauses(120), "cache_control": EPH}],
        "messages": [
            {"role": "user", "content": "Can you search for information about Mars rovers?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tool_1", "name": "search_documents",
                                               "input": {"query": "Mars rovers"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tool_1", "content": "Found 3"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "I found 3 relevant documents."}]},
            {"role": "user", "content": [{"type": "text", "text": "And Perseverance?", "cache_control": EPH}]},
        ],
    },
    "anthropic: automatic caching": {
        "model": "claude-opus-4-6", "max_tokens": 1024, "cache_control": EPH,
        "system": "You are a helpful assistant that remembers our conversation.",
        "messages": [{"role": "user", "content": "My name is Alex. I work on machine learning."},
                     {"role": "assistant", "content": "Nice to meet you, Alex!"},
                     {"role": "user", "content": "What did I say I work on?"}],
    },
    "anthropic: 1h on the stable prefix, 5m on a coding agent's tool loop": {
        "model": "claude-sonnet-4-6", "max_tokens": 32000,
        "tools": [tool("Bash", clauses(40)), tool("Read", clauses(40), EPH_1H)],
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": EPH_1H},
                   {"type": "text", "text": clauses(60), "cache_control": EPH_1H}],
        "messages": [*agent_turns(8)[:-1],
                     {"role": "user", "content": [*agent_turns(8)[-1]["content"][:-1],
                                                  {**agent_turns(8)[-1]["content"][-1], "cache_control": EPH}]}],
    },
    "anthropic on Bedrock: InvokeModel body": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024,
        "system": [{"type": "text", "text": clauses(90), "cache_control": EPH}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise clause 12."}]}],
    },
    "openai chat: the documented short request": {
        "model": "gpt-4o",
        "messages": [{"role": "developer", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Hello!"}],
    },
    "openai responses: a stable key and 24h retention on long instructions": {
        "model": "gpt-5.1", "instructions": clauses(100), "input": "Which clause covers delivery?",
        "prompt_cache_key": "supplier-contract-v3", "prompt_cache_retention": "24h",
    },
    "openai responses: a Codex turn keyed by its conversation id": {
        "model": "gpt-5-codex", "instructions": clauses(100), "store": False, "stream": True,
        "prompt_cache_key": "0199a213-81c0-7800-8aa1-bbab2a035a53",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Run the tests."}]},
            {"type": "function_call", "name": "shell", "arguments": '{"command": ["pytest", "-q"]}',
             "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "3 passed"},
        ],
    },
}


@pytest.mark.parametrize("name", list(CORRECT_BODIES))
def test_correct_bodies_have_no_kv4_findings(name: str) -> None:
    text = json.dumps(CORRECT_BODIES[name], indent=2)
    found = lint_source(text, "body", "request.json", LintContext(), select=["KV4"])
    assert found == [], [(d.code, d.line, d.message) for d in found]


@pytest.mark.parametrize(("body", "provider"), [
    ({"system": "Be brief.", "messages": []}, "anthropic"),
    ({"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": EPH}]}]},
     "anthropic"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    ({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    ({"input": "hi"}, "openai"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}, "openai"),
    ({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "openai"),
    ({"model": "gemini-2.5-pro", "contents": []}, None),
])
def test_provider_is_inferred_from_the_body(body: dict, provider: str | None) -> None:
    doc = SimpleNamespace(body=body, model=body.get("model"), provider=None)
    assert body_provider(doc, LintContext()) == provider
    assert body_provider(doc, LintContext(provider="deepseek")) == "deepseek"


def test_blocks_follow_prompt_order_whatever_the_json_order() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q", "cache_control": EPH}]}],
            "system": [{"type": "text", "text": "s", "cache_control": EPH_1H}],
            "tools": [tool("t", "d")], "cache_control": EPH}
    blocks = anthropic_blocks(body)
    assert [b.path for b in blocks] == [("tools", 0), ("system", 0), ("messages", 0, "content", 0)]
    assert [(m.path, m.block, m.ttl) for m in markers(body, blocks)] == [
        (("system", 0), 1, "1h"), (("messages", 0, "content", 0), 2, "5m"), ((), 2, "5m")]


def test_facts_come_from_the_providers_file() -> None:
    assert provider_fact("anthropic", "claude-opus-4-6", "max_breakpoints") == 4
    assert provider_fact("openai", "gpt-5.7", "max_breakpoints") == 4  # GPT-5.6 and later
    assert provider_fact("openai", "gpt-4o", "max_breakpoints") is None
    assert provider_fact("vllm", None, "max_breakpoints") is None
    assert provider_rules("anthropic", "claude-haiku-4-5").min_prefix_tokens == 4096
    assert provider_rules(None, "gpt-4o") is None
