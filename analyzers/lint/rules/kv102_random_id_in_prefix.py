"""KV102 random-id-in-prefix: a request id, trace id, UUID or random value in the prefix."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

from kvcache.analyzers.lint.classify import EditKind
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_common import pair_findings, prompt_spans
from kvcache.analyzers.lint.static_flow import flows, named_or_templated
from kvcache.analyzers.lint.static_python import Module, module
from kvcache.analyzers.lint.static_text import find_placeholders, find_random_ids

_RANDOM_MODULE_FUNCS = frozenset({"random", "randint", "randrange", "choice", "choices", "sample", "getrandbits",
                                  "uniform", "randbytes", "shuffle", "gauss", "triangular"})
_RANDOM_PREFIXES = ("uuid.uuid1", "uuid.uuid4", "secrets.", "os.urandom", "numpy.random.", "np.random.", "shortuuid.",
                    "nanoid.", "ulid.", "uuid6.", "uuid_utils.uuid")


def _id_finder(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    yield from find_random_ids(text, start, end)
    yield from find_placeholders(text, "random", start, end)


def classify(node: ast.AST, mod: Module) -> tuple[str | None, bool]:
    """Python: a draw from a process-global or OS random source, or an id named as per-request.

    ``random.Random(seed).choice(...)`` is deterministic and not reported;
    ``random.choice(...)`` (the global generator) is.
    """
    if isinstance(node, ast.Call):
        q = mod.qualname(node.func) or ""
        parts = q.split(".")
        if (q.startswith(_RANDOM_PREFIXES) or q in ("uuid4", "uuid1")
                or (len(parts) == 2 and parts[0] == "random" and parts[1] in _RANDOM_MODULE_FUNCS)):
            return f"`{mod.source(node)}`", True
        return None, False
    found = named_or_templated(node, mod, "random")
    return found if found is not None else (None, False)


@register
class RandomIdInPrefix(Rule):
    """A request id, trace id, UUID or random value in the prefix.

    What it does:
    Finds values that are new on every request written into the cached prefix:
    UUIDs, hex ids of 32+ digits, labelled ids (``request_id: 8f3a...``), id
    placeholders (``{request_id}``, ``{trace_id}``, ``{{ uuid() }}``,
    ``{{ greetings | random }}``, ``${crypto.randomUUID()}``) in prompts,
    templates and a body's system prompt or tools; in Python, ``uuid4()``,
    ``secrets.token_hex()``, ``os.urandom()`` and the global ``random.*``
    functions flowing into a system prompt, ``prompt``, ``tools`` or
    ``messages[0]``; in traces, consecutive requests that differ only in an id.

    UUIDs and hex strings introduced as an example (``e.g.``, ``such as``,
    ``format``) or as a hash (``sha256``, ``commit``, ``digest``) are not
    reported, nor is a seeded ``random.Random(seed)``.

    Why is this bad?
    A fresh id makes every prompt unique from the id on. If it sits in the
    system prompt, no request ever reuses another's cache: the whole prompt after
    it is recomputed and billed at the full rate.

    Example:
    A fresh UUID in the system prompt of every request:

        request_id = uuid.uuid4()
        system = f"You are the support agent. Request: {request_id}"

    Use instead:
    Keep ids out of the prompt: send them as request metadata or headers (or,
    if the model must see one, put it in the latest user message).

        system = "You are the support agent."
        client.messages.create(system=system, messages=msgs, metadata={"user_id": user_id})

    References:
    - https://github.com/abstxn/lunch-uncle/issues/6
    """

    code = "KV102"
    name = "random-id-in-prefix"
    severity = "warning"
    kinds = frozenset({"text", "template", "body", "python"})
    pairs = True

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for hit in flows(mod, classify, wide=True):
                start, end = mod.span(hit.node)
                yield self.diagnostic(doc, start, end, f"{hit.what} is new on every call and flows into "
                                      f"{hit.sink.label}", tokens_at_risk=None)
            return
        for start, end, what, where in prompt_spans(doc, _id_finder):
            yield self.diagnostic(doc, start, end, f"{what} in {where} is likely new on every request")

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        yield from pair_findings(self, pair, EditKind.RANDOM_ID, "an id in the prefix changed")
