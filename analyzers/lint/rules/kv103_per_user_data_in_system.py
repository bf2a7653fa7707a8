"""KV103 per-user-data-in-system: names, emails, session ids or home paths in the system prompt."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

from kvcache.analyzers.lint.classify import EditKind
from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_body import system_strings
from kvcache.analyzers.lint.static_common import pair_findings, prompt_spans
from kvcache.analyzers.lint.static_flow import flows, named_or_templated
from kvcache.analyzers.lint.static_python import Module, module
from kvcache.analyzers.lint.static_env import find_user_data
from kvcache.analyzers.lint.static_text import find_placeholders

_USER_CALLS = frozenset({"os.getcwd", "os.getcwdb", "pathlib.Path.cwd", "pathlib.Path.home", "Path.cwd", "Path.home",
                         "os.path.expanduser", "getpass.getuser", "os.getlogin", "tempfile.mkdtemp"})
_USER_ENV = frozenset({"USER", "USERNAME", "LOGNAME", "HOME", "USERPROFILE", "PWD"})


def _text_finder(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    yield from find_user_data(text, start, end)
    yield from find_placeholders(text, "user", start, end)


def _body_finder(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    yield from find_user_data(text, start, end, emails=True)
    yield from find_placeholders(text, "user", start, end)


def _env_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in _USER_ENV


def classify(node: ast.AST, mod: Module) -> tuple[str | None, bool]:
    """Python: user/session fields by name, the user's paths and login, ``os.environ["USER"]``."""
    if isinstance(node, ast.Call):
        q = mod.qualname(node.func) or ""
        if q in _USER_CALLS or (q in ("os.getenv", "os.environ.get") and node.args and _env_key(node.args[0])):
            return f"`{mod.source(node)}`", True
        return None, False
    if isinstance(node, ast.Subscript) and mod.qualname(node.value) == "os.environ" and _env_key(node.slice):
        return f"`{mod.source(node)}`", True
    found = named_or_templated(node, mod, "user")
    return found if found is not None else (None, False)


@register
class PerUserDataInSystem(Rule):
    """Names, emails, session ids or home paths in the system prompt.

    What it does:
    Finds data that differs per user or per session in the system part of the
    prompt: user and session placeholders (``{user_name}``, ``{email}``,
    ``{{ user.id }}``, ``{session_id}``, ``{conversation_id}``, ``{cwd}``),
    labelled fields (``User email: ...``, ``Session ID: ...``), home directories
    (``/home/alice``, ``/Users/bob``) and per-session temp directories; in a
    body's system prompt also personal email addresses (role addresses such as
    ``support@`` and ``example.com`` are not reported); in Python, user and
    session fields (``user.email``, ``session_id``), ``os.getcwd()``,
    ``Path.home()`` and ``os.environ["USER"]`` interpolated into a system prompt;
    in traces, two sessions of one org whose system prefixes differ by user data.

    Why is this bad?
    Caching is keyed on content, so everything after the first per-user byte is
    private to that user. A prompt every user of a workspace could share is
    written to the cache once per user (or per session) instead of once; dust
    saw a 0% hit rate across a workspace from this.

    Example:
    The user's name and email in a system prompt every user could share:

        system = f"You are Acme's assistant. You are talking to {user.name} ({user.email})."

    Use instead:
    Keep the system prompt identical for everyone and move per-user data into
    the first user message (or after the last cache breakpoint).

        system = "You are Acme's assistant."
        messages = [{"role": "user", "content": f"I am {user.name} ({user.email}). {question}"}]

    References:
    - https://github.com/dust-tt/dust/issues/20969
    - https://github.com/Significant-Gravitas/AutoGPT/issues/12790
    - https://github.com/anthropics/claude-agent-sdk-python/issues/784
    """

    code = "KV103"
    name = "per-user-data-in-system"
    severity = "warning"
    kinds = frozenset({"text", "template", "body", "python"})
    pairs = True

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for hit in flows(mod, classify):
                start, end = mod.span(hit.node)
                yield self.diagnostic(doc, start, end, f"{hit.what} is per-user data and flows into {hit.sink.label}",
                                      tokens_at_risk=None)
            return
        if doc.kind == "body":
            spans = prompt_spans(doc, _body_finder, system_strings(doc.body))
        else:
            spans = prompt_spans(doc, _text_finder)
        for start, end, what, where in spans:
            yield self.diagnostic(doc, start, end, f"{what} in {where} differs per user or session")

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        yield from pair_findings(self, pair, EditKind.PER_USER_DATA, "the system prefix carries per-user data")
