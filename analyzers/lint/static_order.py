"""Where a Python tool list gets its order from (KV201).

A tool list is a value assigned to ``tools``, ``tool_list``, ``functions``,
``*_tools`` ..., passed as ``tools=``/``functions=``, returned by a function whose
name ends in ``tools``, or a list such a name is grown into with
``append``/``extend`` inside a ``for`` loop. Its order is *unstable* when it
comes, without ``sorted(...)`` (or a later ``tools.sort()``), from:

* a set (``set(...)``, ``{...}``, a set comprehension): ``str`` hashes are
  randomized per process, so the order changes between runs;
* ``d.values()``/``.keys()``/``.items()`` of a dict that is not a literal fixed
  in the source: the order is registration order (decorators, plugin loading,
  config merges), which changes when the registration does;
* an MCP ``list_tools()`` result: the server's order (and, with several
  servers, whichever answered first);
* ``os.listdir``, ``glob``, ``Path.iterdir``/``glob`` or ``entry_points()``:
  filesystem or installation order.

``random.shuffle(tools)`` is reported too. A dict literal written in the
source keeps its order (Python dicts are insertion-ordered), so iterating
one is fine.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from kvcache.analyzers.lint.static_python import Module, walk

_TOOLS_NAME = re.compile(r"^(?:tools|tool_list|tool_defs|tool_definitions|tool_specs|tool_schemas|functions"
                         r"|function_defs|\w+_tools)$", re.I)
_TOOLS_FUNC = re.compile(r"tools$", re.I)
_LISTINGS = frozenset({"os.listdir", "os.scandir", "glob.glob", "glob.iglob", "importlib.metadata.entry_points",
                       "pkg_resources.iter_entry_points"})


def unordered_tools(mod: Module) -> Iterator[tuple[ast.AST, str]]:
    """``(node, why)`` for each tool list with an unstable order, at the node the order comes from."""
    sorted_later = {n.func.value.id for n in mod.nodes if isinstance(n, ast.Call) and isinstance(
        n.func, ast.Attribute) and n.func.attr == "sort" and isinstance(n.func.value, ast.Name)}
    seen: set[int] = set()
    for node in mod.nodes:
        values: list[tuple[ast.expr, str]] = []
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                if _TOOLS_NAME.match(name) and name not in sorted_later:
                    values.append((node.value, name))
        elif isinstance(node, ast.Call):
            values += [(kw.value, kw.arg) for kw in node.keywords if kw.arg in ("tools", "functions")]
            q = mod.qualname(node.func) or ""
            if q in ("random.shuffle", "shuffle") and node.args and _is_tools_name(node.args[0]):
                yield node, "`random.shuffle` puts the tools in a new order on every run"
        elif isinstance(node, ast.Return) and node.value is not None:
            fn = mod.enclosing_function(node)
            if fn is not None and _TOOLS_FUNC.search(fn.name):
                values.append((node.value, f"{fn.name}()"))
        elif isinstance(node, ast.For | ast.AsyncFor) and _grows_tools(node, sorted_later):
            found = _source(node.iter, mod, set())
            if found and id(found[0]) not in seen:
                seen.add(id(found[0]))
                yield found[0], found[1]
        for value, _label in values:
            found = _source(value, mod, set())
            if found and id(found[0]) not in seen:
                seen.add(id(found[0]))
                yield found


def _is_tools_name(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return bool(_TOOLS_NAME.match(name))


def _grows_tools(loop: ast.For | ast.AsyncFor, sorted_later: set[str]) -> bool:
    for n in walk(loop):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("append", "extend")
                and _is_tools_name(n.func.value) and getattr(n.func.value, "id", None) not in sorted_later):
            return True
    return False


_SET_WHY = "a set's order follows str hashes, which are randomized per process"
_WRAPPERS = frozenset({"list", "tuple", "enumerate", "reversed", "iter", "filter", "map", "itertools.chain"})


def _source(node: ast.AST, mod: Module, seen: set[int]) -> tuple[ast.AST, str] | None:
    """The unordered source a tool list (or the iterable it is built from) comes from, or ``None``."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, ast.Set | ast.SetComp):
        return node, _SET_WHY
    if isinstance(node, ast.ListComp | ast.GeneratorExp):
        return _source(node.generators[0].iter, mod, seen)
    if isinstance(node, ast.List | ast.Tuple):
        starred = (_source(e.value, mod, seen) for e in node.elts if isinstance(e, ast.Starred))
        return next((f for f in starred if f), None)
    if isinstance(node, ast.BinOp):
        return _source(node.left, mod, seen) or _source(node.right, mod, seen)
    if isinstance(node, ast.Attribute | ast.Await):
        return _source(node.value, mod, seen)  # (await session.list_tools()).tools
    if isinstance(node, ast.Name):
        for value in mod.values_of(node) or []:
            if isinstance(value, ast.Call) and mod.qualname(value.func) in ("set", "frozenset"):
                return node, f"`{node.id}` is a set, whose order follows str hashes (randomized per process)"
            found = _source(value, mod, seen)
            if found:
                return found
        return None
    if not isinstance(node, ast.Call):
        return None
    q = mod.qualname(node.func) or ""
    attr = node.func.attr if isinstance(node.func, ast.Attribute) else ""
    if q == "sorted":
        return None
    if q in ("set", "frozenset"):
        return node, _SET_WHY
    if attr == "list_tools":
        return node, "`list_tools()` returns the MCP server's order, which can change between connections"
    if q in _LISTINGS or attr in ("iterdir", "rglob") or (attr == "glob" and q != "glob.glob"):
        return node, f"`{mod.source(node)}` lists in filesystem order"
    if attr in ("values", "keys", "items") and not node.args and not _literal_dict(node.func.value, mod):  # type: ignore[union-attr]
        return node, f"`{mod.source(node)}` follows the order the entries were registered in"
    if q in _WRAPPERS:
        return next((f for f in (_source(a, mod, seen) for a in node.args) if f), None)
    return None


def _literal_dict(node: ast.AST, mod: Module) -> bool:
    """A dict written out in the source and never added to (its order is fixed)."""
    if isinstance(node, ast.Dict):
        return True
    if not isinstance(node, ast.Name) or node.id in mod.subscripted:
        return False
    values = mod.values_of(node)
    return bool(values) and all(isinstance(v, ast.Dict) or (isinstance(v, ast.Call) and mod.qualname(v.func) == "dict"
                                                            and not v.args) for v in values)
