"""KV406: OpenAI's ``prompt_cache_key`` missing on a long prompt, or unique per request."""

from __future__ import annotations

import re
from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.provider_blocks import tokens
from kvcache.analyzers.lint.provider_body import body_provider, openai_prompt_text, provider_rules
from kvcache.analyzers.lint.rule import LintContext, Rule, register

# Parts of a key that differ on every request. A bare UUID is not one of them:
# a conversation id (what Codex sends) is a good key.
PER_REQUEST: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a date-time", re.compile(r"\d{4}-?\d{2}-?\d{2}[T _]\d{2}:?\d{2}")),
    ("a Unix timestamp", re.compile(r"(?<!\d)1[5-9]\d{8}(?:\d{3}(?:\d{3})?)?(?!\d)")),
    # req_8f3a..., trace-id=4bf9..., chatcmpl-B9MB..., resp_67cc...: a label, then a run holding a digit
    ("a request id", re.compile(
        r"(?i)(?<![a-z0-9])(?:req|request|trace|span|nonce|chatcmpl|resp|msg|call)(?:[-_]?id)?[-_:.=]"
        r"(?=[a-z]*\d)[a-z0-9]{4,}")),
)


@register
class PromptCacheKeyMisuse(Rule):
    """OpenAI's ``prompt_cache_key`` missing on a long prompt, or unique per request.

    What it does:
    For OpenAI Chat Completions and Responses bodies (``--provider openai``,
    or, without ``--provider``, a body with ``input``, ``instructions``,
    ``prompt_cache_key``, or ``messages`` with a ``system``/``developer``
    role):

    - a ``prompt_cache_key`` that changes on every request (it holds a
      date-time, a Unix timestamp, or a request, trace or response id) is a
      warning;
    - a body without ``prompt_cache_key`` whose prompt is long enough to be
      cached (``min_prefix_tokens`` in ``engine/data/providers.json``,
      1024; counted with cl100k_base, an approximation) gets an info note.

    A key that is only a UUID is accepted: it is usually a conversation id,
    which is a sound key.

    Why is this bad?
    OpenAI routes a request to a cache machine by a hash of the prompt's
    first tokens (about 256) combined with ``prompt_cache_key``. Requests
    that share a prefix and a key land on the same machine and hit; a key
    that is new on every request scatters them over machines that have
    never seen the prefix. Without a key, every request that starts the
    same way (the same instructions, say) hashes alike, and once that
    prefix is busy the requests overflow to machines that lack the rest of
    each conversation: pi_agent_rust#188 measured a 0.3% hit rate without a
    key and 83-95% with one.

    Example:
    A key built from a request id and a timestamp::

        {"model": "gpt-5", "prompt_cache_key": "req_8f3a-1735689600",
         "instructions": "<2,000 tokens of instructions>", "input": "Hi"}

    Use instead:
    A key that stays the same for the requests that share the prefix: per
    conversation, per user, or per prompt version.

        {"model": "gpt-5", "prompt_cache_key": "support-agent-v3",
         "instructions": "<2,000 tokens of instructions>", "input": "Hi"}

    References:
    - https://developers.openai.com/api/docs/guides/prompt-caching
    - https://github.com/Dicklesworthstone/pi_agent_rust/issues/188
    - https://github.com/SamSaffron/term-llm/issues/921
    """

    code = "KV406"
    name = "prompt-cache-key-misuse"
    severity = "warning"
    kinds = frozenset({"body"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        body = doc.body
        if body_provider(doc, ctx) != "openai" or not isinstance(body, dict):
            return
        key = body.get("prompt_cache_key")
        if isinstance(key, str):
            hits = [(m.start(), what, m.group()) for what, rx in PER_REQUEST if (m := rx.search(key))]
            span = doc.span_of("prompt_cache_key")
            if hits and span is not None:
                _, what, found = min(hits)
                yield self.diagnostic(
                    doc, *span,
                    f"prompt_cache_key holds {what} ({found!r}), so it changes on every request and routes "
                    "requests that share a prefix to different cache machines",
                    tokens_at_risk=tokens(openai_prompt_text(body)[0]),
                )
            return
        if key is not None or ("messages" not in body and "input" not in body):
            return
        rules = provider_rules("openai", doc.model)
        prompt = tokens(openai_prompt_text(body)[0])  # images and files only add to it
        root = doc.span_of()
        if rules is None or root is None or prompt < rules.min_prefix_tokens:
            return
        yield self.diagnostic(
            doc, root[0], root[0] + 1,
            f"no prompt_cache_key on a prompt of about {prompt} tokens (cl100k approximation); requests that "
            "share this prefix are routed by its hash alone, and a stable key raises their hit rate",
            tokens_at_risk=None, severity="info",
        )
