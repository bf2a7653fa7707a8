"""KV202 non-canonical-json: JSON in the prompt serialized without a fixed key order."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from kvcache.analyzers.lint.classify import EditKind
from kvcache.analyzers.lint.diagnostic import Diagnostic, Edit, Fix
from kvcache.analyzers.lint.document import LintDocument
from kvcache.analyzers.lint.rule import LintContext, Rule, register
from kvcache.analyzers.lint.static_common import pair_findings
from kvcache.analyzers.lint.static_flow import flows
from kvcache.analyzers.lint.static_json import JsonUse, json_uses, key_orders, reordered
from kvcache.analyzers.lint.static_python import Module, module

_DUMPS = frozenset({"json.dumps", "simplejson.dumps", "ujson.dumps"})
_SCALAR_CALLS = frozenset({"str", "int", "float", "bool", "len", "round", "repr"})


_MAPPING_NAME = re.compile(r"result|data|payload|args|kwargs|params|body|resp|obj|record|meta|config|opts|options|info"
                           r"|details|state|output|input|extra|context|ctx|dict|map|attrs|fields|values|items|json"
                           r"|schema|spec|event|message|msg|row|doc", re.I)


def _annotation(node: ast.Name, mod: Module) -> bool | None:
    """Whether a parameter is annotated as a scalar (``str``, ``int | None`` ...); ``None`` when unannotated."""
    fn = mod.enclosing_function(node)
    args = fn.args if fn is not None else None
    arg = next((a for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg == node.id), None) if args else None
    if arg is None or arg.annotation is None:
        return None
    names = {n.id if isinstance(n, ast.Name) else n.value for n in ast.walk(arg.annotation)
             if isinstance(n, ast.Name) or (isinstance(n, ast.Constant) and isinstance(n.value, str))}
    return bool(names) and names <= {"str", "int", "float", "bool", "bytes", "None", "Optional"}


def _stable(node: ast.AST, mod: Module, depth: int = 0) -> bool:
    """A value whose key order is fixed by the source: literals, scalars, names assigned only those.

    At the top (``depth`` 0) a parameter counts as stable only when annotated as
    a scalar; inside a dict literal, a parameter or attribute also counts when
    unannotated and not named like a mapping (``result``, ``data``, ``payload`` ...).
    """
    if depth > 4:
        return False
    if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp | ast.UnaryOp):
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return all(_stable(e, mod, depth + 1) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(isinstance(k, ast.Constant) for k in node.keys) and all(_stable(v, mod, depth + 1) for v in node.values)
    if isinstance(node, ast.Call):
        return mod.qualname(node.func) in _SCALAR_CALLS
    if isinstance(node, ast.Attribute):
        return depth > 0 and not _MAPPING_NAME.search(node.attr)
    if isinstance(node, ast.Name):
        values = mod.values_of(node)
        if values is None:
            scalar = _annotation(node, mod)
            return scalar if scalar is not None else depth > 0 and not _MAPPING_NAME.search(node.id)
        return bool(values) and all(_stable(v, mod, depth + 1) for v in values)
    return False


def classify(node: ast.AST, mod: Module) -> tuple[str | None, bool]:
    """Python: ``json.dumps`` without ``sort_keys=True`` of anything but a literal."""
    if isinstance(node, ast.Call):
        if (mod.qualname(node.func) or "") not in _DUMPS:
            return None, False
        kws = {k.arg: k.value for k in node.keywords}
        sort_keys = kws.get("sort_keys")
        if None in kws or (isinstance(sort_keys, ast.Constant) and sort_keys.value is True):
            return None, True  # sorted, or **kwargs that may sort
        if sort_keys is None and node.args and _stable(node.args[0], mod):
            return None, True
        return f"`{mod.source(node)}`", True
    return None, isinstance(node, ast.Name)


def _fix(call: ast.Call, mod: Module) -> Fix | None:
    """Add ``sort_keys=True`` after the last argument (or turn ``sort_keys=False`` into ``True``)."""
    sort_keys = next((k.value for k in call.keywords if k.arg == "sort_keys"), None)
    if sort_keys is not None:
        if not (isinstance(sort_keys, ast.Constant) and sort_keys.value is False):
            return None
        start, end = mod.span(sort_keys)
        text = "True"
    else:
        last = max([*call.args, *call.keywords], key=lambda n: (n.end_lineno, n.end_col_offset), default=None)
        if last is None:
            return None
        start = end = mod.offset(last.end_lineno, last.end_col_offset)  # type: ignore[arg-type]
        text = ", sort_keys=True"
    doc = mod.doc
    edit = Edit(*doc.position(start), *doc.position(end), text)
    return Fix("serialize with sort_keys=True (changes the prompt bytes: the next request writes a new cache entry; "
               "raises TypeError if one dict mixes key types)", (edit,), changes_prompt=True)


@register
class NonCanonicalJson(Rule):
    """JSON in the prompt serialized without a fixed key order.

    What it does:
    Finds JSON that enters the prompt without a canonical key order. In Python:
    ``json.dumps(...)`` without ``sort_keys=True`` whose result reaches a system
    prompt, a prompt, a message's ``content``/``text``/``arguments``/``output``
    (a dict with ``role``/``type``, ``content=``, ``ToolMessage(...)``) through
    f-strings, concatenation, ``.format`` or a variable; dumping a literal with
    constant keys is not reported. In a request body: two tool-call arguments or
    tool results of the same tool whose shared keys appear in a different order,
    which shows the client does not fix key order. In traces: consecutive
    requests whose JSON parses equal but is serialized differently.

    One body cannot show that a single object will be re-serialized; spacing
    differences alone are not reported (a model's own argument text varies).

    Why is this bad?
    JSON in the history is re-sent on every turn. If the client rebuilds it from a
    dict whose order depends on how it was built (a merge, a set, a re-parse) the
    bytes change while the data does not, and the cache misses from there to the
    end of the prompt; swift-ai-sdk users saw 26-31% hit rates from this.

    Example:
    A tool result serialized in whatever order the dict was built:

        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})

    Use instead:
    Serialize canonically (``--fix`` adds ``sort_keys=True``), and re-send the
    exact bytes of earlier turns instead of re-serializing them.

        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result, sort_keys=True)})

    References:
    - https://github.com/stanfordnlp/dspy/issues/10216
    - https://github.com/stanfordnlp/dspy/issues/10227
    - https://github.com/teunlao/swift-ai-sdk/issues/16
    - https://github.com/teunlao/swift-ai-sdk/issues/39
    - https://github.com/OpenRouterTeam/ai-sdk-provider/issues/472
    """

    code = "KV202"
    name = "non-canonical-json"
    severity = "warning"
    kinds = frozenset({"body", "python"})
    pairs = True
    fixable = True

    def check(self, doc: LintDocument, ctx: LintContext) -> Iterator[Diagnostic]:
        if doc.kind == "python":
            mod = module(doc)
            for hit in flows(mod, classify, wide=True, content=True):
                start, end = mod.span(hit.node)
                yield self.diagnostic(doc, start, end, f"{hit.what} without sort_keys=True flows into {hit.sink.label}; "
                                      "its key order follows how the dict was built", tokens_at_risk=None,
                                      fix=_fix(hit.node, mod))  # type: ignore[arg-type]
            return
        seen: dict[tuple[str, str, tuple[str, ...]], tuple[tuple[str, ...], JsonUse]] = {}
        reported: set[tuple[str, str]] = set()
        for use in json_uses(doc.body):
            for where, keys in key_orders(use.value):
                first = seen.setdefault((use.tool, use.role, where), (keys, use))
                if (use.tool, use.role) in reported or not reordered(first[0], keys):
                    continue
                reported.add((use.tool, use.role))
                span, later = doc.span_of(*first[1].path), doc.span_of(*use.path)
                if span is None or later is None:
                    continue
                line = doc.position(later[0])[0]
                what = "tool-call arguments" if use.role == "arguments" else "tool results"
                yield self.diagnostic(
                    doc, span[0], span[1],
                    f"`{use.tool or '?'}` {what} list keys as ({', '.join(_common(first[0], keys))}) here but "
                    f"({', '.join(_common(keys, first[0]))}) on line {line}: the JSON is not serialized in a fixed order")

    def check_pair(self, pair: Any, ctx: LintContext) -> Iterator[Diagnostic]:
        yield from pair_findings(self, pair, EditKind.JSON_KEY_ORDER, "JSON in the prompt was re-serialized")


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    return [k for k in a if k in b][:4]
