"""KV304: the model changes within a session."""

from __future__ import annotations

from collections.abc import Iterator

from kvcache.analyzers.lint.classify import EditKind, RequestPair
from kvcache.analyzers.lint.classify_report import has_kind, pair_diagnostic
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.rule import LintContext, Rule, register


@register
class ModelSwitch(Rule):
    """A session continues on another model.

    What it does:
    Reports a request whose ``model`` differs from the previous request of
    its session (a fallback after an error, a cheaper model for some turns,
    a router picking per turn).

    Why is this bad?
    Caches are per model: nothing the first model cached can be read by the
    second, so the whole conversation is prefilled (and written) again, and
    switching back later finds the first model's cache expired or evicted.
    A fallback chain that alternates models on retries loses the cache twice.

    Example:
    Turns 1–5 go to ``claude-sonnet-4-6``; turn 6 is retried on
    ``claude-haiku-4-5`` after an overload error and turn 7 goes back.

    Use instead:
    Keep one model per session. Run the cheaper model as a sub-agent with its
    own short context, and retry on the same model (with backoff) before
    falling back.

        fallback = None   # retry the same model; hand a small task to a sub-agent instead

    References:
    - https://github.com/NousResearch/hermes-agent/issues/58747
    - https://github.com/OpenHands/software-agent-sdk/issues/2972
    """

    code = "KV304"
    name = "model-switch"
    pairs = True

    def check_pair(self, pair: RequestPair, ctx: LintContext) -> Iterator[Diagnostic]:
        if (kind := has_kind(pair, EditKind.MODEL_SWITCH)) is not None:
            yield pair_diagnostic(self, pair, kind, "model switched", ctx)
