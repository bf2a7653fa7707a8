"""Which Python values become the cached prefix, and what flows into them.

Deliberately simple, so a finding can be explained in one line.

A **sink** is an expression that becomes part of the prompt prefix:

* assigned to a name or attribute that says so: ``system``, ``system_prompt``,
  ``SYSTEM_PROMPT``, ``sys_msg``, ``instructions``, ``preamble``, anything ending in
  ``_system_prompt`` or ``_instructions``;
* returned by a function so named (``def build_system_prompt(): return ...``);
* passed as ``system=``, ``system_prompt=``, ``system_message=``, ``system_instruction=``,
  ``instructions=`` or ``preamble=``;
* the ``content`` of a dict literal with ``"role": "system"`` or ``"developer"``, the
  content of ``SystemMessage(...)``, the text of a ``("system", ...)`` tuple;
* with ``wide=True`` also: names ``prompt``/``tools``, keywords ``prompt=``/``tools=``
  and the first element of a list literal assigned to or passed as ``messages``;
* with ``content=True`` also: any message's text (the ``content``/``text``/
  ``arguments``/``output`` of a dict literal with a ``role``, ``type`` or
  ``arguments`` key; ``content=`` and ``arguments=`` keywords; the first argument
  of ``HumanMessage``/``AIMessage``/``ToolMessage``/``FunctionMessage``/``ChatMessage``).

From a sink the walker follows how strings are built: f-strings, ``+`` and
``%``, ``str.format``/``format_map``/``join``/``Template.substitute``/``render``
arguments, ``str()``/``sorted()``/``list()``, comprehensions (their element and
what they iterate), conditional expressions, list/tuple/dict literals, and a
method call or attribute on a value (``now.isoformat()``, ``uuid4().hex``). A
name stands for every value assigned to it in the same function, an enclosing
function or at module level. The walker does not enter other calls' arguments
or other functions' parameters; a name it cannot trace (a parameter, an
attribute such as ``user.email``) is judged by its spelling.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kvcache.analyzers.lint.static_python import Module
from kvcache.analyzers.lint.static_text import find_placeholders, name_is

_SYSTEM_NAME = re.compile(r"^(?:sys(?:tem)?(?:_?(?:prompt|message|msg|text|content|instructions?|preamble))?"
                          r"|instructions?|preamble|developer_(?:prompt|message)|\w*_system_prompt|\w*_instructions)$", re.I)
_WIDE_NAME = re.compile(r"^(?:prompt|base_prompt|prompt_prefix|tools|tool_list|tool_defs|functions)$", re.I)
_SYSTEM_FUNC = re.compile(r"(?:system_?prompt|system_?message|instructions)$", re.I)
_SYSTEM_KW = frozenset({"system", "system_prompt", "system_message", "system_instruction", "instructions", "preamble"})
_WIDE_KW = frozenset({"prompt", "tools", "functions"})
_MESSAGES = frozenset({"messages", "msgs", "chat_messages", "input"})
_MESSAGE_CLASSES = ("HumanMessage", "AIMessage", "ToolMessage", "FunctionMessage", "ChatMessage")
_BUILDERS = frozenset({"format", "format_map", "join", "substitute", "safe_substitute", "render", "dedent", "indent",
                       "str", "repr", "Template", "textwrap.dedent", "textwrap.indent", "string.Template", "sorted",
                       "list", "tuple", "reversed", "map", "filter"})


@dataclass(slots=True, frozen=True)
class Sink:
    node: ast.expr
    label: str  # "the system prompt `system`", "`system=`", ...


@dataclass(slots=True, frozen=True)
class Hit:
    node: ast.AST  # the volatile call, name or string that reaches the sink
    what: str
    sink: Sink


# classify(node, module) -> (description of a hit or None, stop descending)
Classifier = Callable[[ast.AST, Module], tuple[str | None, bool]]


SYSTEM, WIDE, CONTENT = 0, 1, 2  # sink levels: the system part; + prompt/tools/messages[0]; + any message text


def sinks(mod: Module, *, wide: bool = False, content: bool = False) -> list[Sink]:
    """Every prompt-prefix expression of the module (see the module docstring).

    All levels are found in one pass over the module and cached on it; message
    sinks come before name sinks, so a finding names the most specific one.
    """
    if "sinks" not in mod.cache:
        found = list(_sinks(mod))
        found.sort(key=lambda s: s[1])  # stable: keyword/dict/message sinks (rank 0) before names (rank 1)
        mod.cache["sinks"] = found
    top = CONTENT if content else WIDE if wide else SYSTEM
    return [sink for sink, _rank, level in mod.cache["sinks"] if level <= top]  # type: ignore[attr-defined]


def _sinks(mod: Module) -> Iterator[tuple[Sink, int, int]]:
    """``(sink, rank, level)`` for every candidate sink."""
    for node in mod.nodes:
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            if node.value is None:
                continue
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(
                    target, ast.Attribute) else ""
                if _SYSTEM_NAME.match(name):
                    yield Sink(node.value, f"the prompt `{name}`"), 1, SYSTEM
                elif _WIDE_NAME.match(name):
                    yield Sink(node.value, f"the prompt `{name}`"), 1, WIDE
                elif name in _MESSAGES and isinstance(node.value, ast.List) and node.value.elts:
                    yield Sink(node.value.elts[0], f"`{name}[0]`"), 1, WIDE
        elif isinstance(node, ast.Return):
            fn = mod.enclosing_function(node) if node.value is not None else None
            if fn is not None and _SYSTEM_FUNC.search(fn.name):
                yield Sink(node.value, f"the return value of `{fn.name}()`"), 1, SYSTEM  # type: ignore[arg-type]
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in _SYSTEM_KW:
                    yield Sink(kw.value, f"`{kw.arg}=`"), 0, SYSTEM
                elif kw.arg in _WIDE_KW:
                    yield Sink(kw.value, f"`{kw.arg}=`"), 0, WIDE
                elif kw.arg in _MESSAGES and isinstance(kw.value, ast.List) and kw.value.elts:
                    yield Sink(kw.value.elts[0], f"`{kw.arg}[0]`"), 1, WIDE
                elif kw.arg in ("content", "arguments"):
                    yield Sink(kw.value, f"`{kw.arg}=`"), 0, CONTENT
            callee = mod.qualname(node.func) or ""
            short = callee.rsplit(".", 1)[-1]
            if node.args and callee.endswith(_MESSAGE_CLASSES):
                yield Sink(node.args[0], f"`{short}(...)`"), 0, CONTENT
            if callee.endswith(("SystemMessage", "SystemMessagePromptTemplate.from_template")):
                for value in [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("content", "template"))]:
                    yield Sink(value, f"`{short}(...)`"), 0, SYSTEM
        elif isinstance(node, ast.Dict):
            keys = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
            role = keys.get("role")
            if isinstance(role, ast.Constant) and role.value in ("system", "developer") and "content" in keys:
                yield Sink(keys["content"], f"a {role.value} message"), 0, SYSTEM
            elif keys.keys() & {"role", "type", "arguments"}:
                for key in ("content", "text", "arguments", "output"):
                    if key in keys:
                        yield Sink(keys[key], f"a message's `{key}`"), 0, CONTENT
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value in ("system", "developer"):
                yield Sink(node.elts[1], f"a ({first.value!r}, ...) message"), 0, SYSTEM


def flows(mod: Module, classify: Classifier, *, wide: bool = False, content: bool = False) -> list[Hit]:
    """Volatile values (as ``classify`` judges them) that reach a sink; one hit per value, in source order."""
    hits: dict[int, Hit] = {}
    for sink in sinks(mod, wide=wide, content=content):
        _visit(sink.node, mod, classify, sink, hits, set())
    return sorted(hits.values(), key=lambda h: (h.node.lineno, h.node.col_offset))  # type: ignore[attr-defined]


def _visit(node: ast.AST, mod: Module, classify: Classifier, sink: Sink, hits: dict[int, Hit], seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, ast.Name):
        values = mod.values_of(node)
        if values is not None:
            for value in values:
                _visit(value, mod, classify, sink, hits, seen)
            return
    what, stop = classify(node, mod)
    if what:
        hits.setdefault(id(node), Hit(node, what, sink))
    if what or stop:
        return
    for child in _children(node, mod):
        _visit(child, mod, classify, sink, hits, seen)


def _children(node: ast.AST, mod: Module) -> list[ast.AST]:
    if isinstance(node, ast.JoinedStr):
        return list(node.values)
    if isinstance(node, ast.Attribute):
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        # a.b.c was judged as a whole; of a pure chain only the root name is followed (to its assignments)
        return [root] if isinstance(root, ast.Name) else [node.value]
    if isinstance(node, ast.FormattedValue | ast.Subscript | ast.Await | ast.Starred | ast.NamedExpr):
        return [node.value]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return [node.left, node.right]
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
        return [node.elt, *(g.iter for g in node.generators)]
    if isinstance(node, ast.IfExp):
        return [node.body, node.orelse]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return list(node.elts)
    if isinstance(node, ast.Dict):
        return [v for v in node.values if v is not None]
    if isinstance(node, ast.Call):
        out: list[ast.AST] = []
        callee = mod.qualname(node.func) or ""
        if isinstance(node.func, ast.Attribute):
            out.append(node.func.value)  # a method on a value: now.isoformat(), template.format(...)
        if isinstance(node.func, ast.Attribute) and node.func.attr in _BUILDERS or callee in _BUILDERS:
            out += [*node.args, *(k.value for k in node.keywords)]
        return out
    return []


def string_parts(node: ast.AST) -> str | None:
    """The text of a string constant or of an f-string without replacement fields (format specs)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in node.values):
        return "".join(str(v.value) for v in node.values)  # type: ignore[attr-defined]
    return None


def named_or_templated(node: ast.AST, mod: Module, kind: str, *, last_only: bool = False) -> tuple[str | None, bool] | None:
    """The part of a rule's ``classify`` that only differs by ``kind``.

    A name or attribute whose words name ``kind`` (``user_name``, ``request_id``),
    or a string holding a ``kind`` placeholder, is a hit; any other name or string
    is a value the walker may follow. Returns ``None`` for other nodes, which the
    rule classifies itself.
    """
    if isinstance(node, ast.Attribute | ast.Name):
        dotted = mod.qualname(node)
        if dotted and name_is(kind, dotted, last_only=last_only):
            return f"`{dotted}`", True
        return None, isinstance(node, ast.Name)
    text = string_parts(node)
    if text is not None:
        found = next(find_placeholders(text, kind), None)
        return (found[2], True) if found else (None, True)
    return None
