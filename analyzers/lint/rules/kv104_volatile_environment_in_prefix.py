"""KV104 volatile-environment-in-prefix: git status, file listings, todos or memory in the system prompt."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from kvcache.analyzers.lint.diagnostic import Diagnostic
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_body import system_strings
from kvcache.analyzers.lint.static_common import prompt_spans
from kvcache.analyzers.lint.static_flow import flows, named_or_templated
from kvcache.analyzers.lint.static_python import Module, module
from kvcache.analyzers.lint.static_env import find_environment
from kvcache.analyzers.lint.static_text import find_placeholders

_ENV_CALLS = frozenset({"subprocess.run", "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput",
                        "subprocess.Popen", "os.popen", "os.listdir", "os.scandir", "os.walk", "glob.glob", "glob.iglob"})
_PATH_METHODS = frozenset({"iterdir", "rglob", "glob"})
_GIT_METHODS = (".git.status", ".git.diff", ".git.log", ".untracked_files")


def _env_finder(text: str, start: int, end: int) -> Iterator[tuple[int, int, str]]:
    yield from find_environment(text, start, end)
    yield from find_placeholders(text, "env", start, end)


def classify(node: ast.AST, mod: Module) -> tuple[str | None, bool]:
    """Python: command output, directory listings and globs, or names such as ``git_status`` and ``todos``."""
    if isinstance(node, ast.Call):
        q = mod.qualname(node.func) or ""
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if q in _ENV_CALLS or q.endswith(_GIT_METHODS) or (attr in _PATH_METHODS and q != "glob.glob"):
            return f"`{mod.source(node)}`", True
        return None, False
    found = named_or_templated(node, mod, "env", last_only=True)
    return found if found is not None else (None, False)


@register
class VolatileEnvironmentInPrefix(Rule):
    """Git status, file listings, todos or memory rendered into the system prompt.

    What it does:
    Finds the state of the user's machine rendered into the system prompt:
    ``git status`` output (long or ``--short``), ``git log --oneline`` and
    ``ls -l`` listings, and placeholders such as ``{git_status}``,
    ``{cwd_listing}``, ``{file_tree}``, ``{todos}`` or ``{{ memory }}`` in
    prompts, templates and a body's system prompt; in Python, the output of
    ``subprocess``, ``os.listdir``/``os.walk``, ``glob`` and ``Path.iterdir``/
    ``Path.glob`` (or names like ``git_status`` and ``todos``) interpolated
    into a system prompt.

    A command-output block needs two recognisable lines; a hand-written
    project layout (a ``tree`` drawing) or a static checklist is not reported.

    Why is this bad?
    The working tree, the todo list and the agent's memory change while a
    session runs. Rendered into the system prompt, every change rewrites the
    prefix, so the whole conversation after it is written to the cache again;
    claude-code measured 8.8% of calls re-creating the prefix this way.

    Example:
    The working tree's status rendered into the system prompt:

        status = subprocess.run(["git", "status", "--short"], capture_output=True, text=True).stdout
        system = f"{BASE_PROMPT}\\n\\nCurrent git status:\\n{status}"

    Use instead:
    Put volatile state in a later block (the latest user message or a tool
    result), or snapshot it once per session and keep that copy frozen.

        system = BASE_PROMPT
        messages.append({"role": "user", "content": f"<git-status>\\n{status}\\n</git-status>\\n{question}"})

    References:
    - https://github.com/anthropics/claude-code/issues/47107
    - https://github.com/anthropics/claude-code/issues/78720
    - https://github.com/anomalyco/opencode/issues/5224
    """

    code = "KV104"
    name = "volatile-environment-in-prefix"
    severity = "warning"
    kinds = frozenset({"text", "template", "body", "python"})

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for hit in flows(mod, classify):
                start, end = mod.span(hit.node)
                yield self.diagnostic(doc, start, end, f"{hit.what} reads the working environment and flows into "
                                      f"{hit.sink.label}", tokens_at_risk=None)
            return
        strings = system_strings(doc.body) if doc.kind == "body" else None
        for start, end, what, where in prompt_spans(doc, _env_finder, strings):
            yield self.diagnostic(doc, start, end, f"{what} in {where} changes as the session works")
