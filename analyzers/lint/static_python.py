"""Names, scopes and positions in Python source, for the prompt data flow (``static_flow.py``).

:class:`Module` resolves import aliases (``from datetime import datetime as
dt`` makes ``dt.now`` read ``datetime.datetime.now``), records what each name
is assigned in each function (or at module level), and converts ``ast``
positions (UTF-8 byte columns) to character offsets in the file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from kvcache.analyzers.lint.document import LintDocument

ScopeNode = ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


class Module:
    """A parsed source file with what the flow analysis asks of it."""

    def __init__(self, doc: LintDocument) -> None:
        self.doc = doc
        self.tree: ast.Module = doc.tree
        self.aliases: dict[str, str] = {}  # local name -> dotted origin
        self.assigned: dict[int, dict[str, list[ast.expr]]] = {}  # id(scope) -> name -> values
        self.subscripted: set[str] = set()  # names written as name[key] = ... or name.update(...) (registries)
        self.scope_of: dict[int, ScopeNode] = {}  # id(node) -> enclosing scope
        self.parent_scope: dict[int, ScopeNode | None] = {id(self.tree): None}
        self.nodes: list[ast.AST] = [self.tree]  # every node, depth first in source order
        self.cache: dict[object, object] = {}  # what the rules compute once per module (sinks ...)
        self._index(self.tree, self.tree)

    # ------------------------------------------------------------------ index
    def _index(self, node: ast.AST, scope: ScopeNode) -> None:
        for child in ast.iter_child_nodes(node):
            self.nodes.append(child)
            self.scope_of[id(child)] = scope
            if isinstance(child, ast.Import | ast.ImportFrom):
                self._imports(child)
            elif isinstance(child, ast.Assign):
                for target in child.targets:
                    self._assign(scope, target, child.value)
            elif isinstance(child, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and child.value is not None:
                self._assign(scope, child.target, child.value)
            elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                  and child.func.attr in ("update", "setdefault") and isinstance(child.func.value, ast.Name)):
                self.subscripted.add(child.func.value.id)
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                self.parent_scope[id(child)] = scope
                self.assigned.setdefault(id(child), {})
                self._index(child, child)
            else:
                self._index(child, scope)

    def _imports(self, node: ast.Import | ast.ImportFrom) -> None:
        for a in node.names:
            if isinstance(node, ast.Import):
                local = a.asname or a.name.split(".")[0]
                self.aliases[local] = a.name if a.asname else local
            elif node.module and a.name != "*":
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def _assign(self, scope: ScopeNode, target: ast.expr, value: ast.expr) -> None:
        names = self.assigned.setdefault(id(scope), {})
        if isinstance(target, ast.Name):
            names.setdefault(target.id, []).append(value)
        elif isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List) and len(
                target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self._assign(scope, t, v)
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            self.subscripted.add(target.value.id)

    # ------------------------------------------------------------------ names
    def qualname(self, node: ast.AST) -> str | None:
        """``a.b.c`` for a Name/Attribute chain, the first part resolved through imports."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def values_of(self, name: ast.Name) -> list[ast.expr] | None:
        """Every value assigned to ``name`` in its scope or an enclosing one; ``None`` if never assigned.

        An imported name counts as known (its value is a module or object, not
        something the prompt rules can judge), so it returns ``[]``.
        """
        scope: ScopeNode | None = self.scope_of.get(id(name), self.tree)
        while scope is not None:
            found = self.assigned.get(id(scope), {}).get(name.id)
            if found is not None:
                return found
            scope = self.parent_scope.get(id(scope))
        return [] if name.id in self.aliases else None

    def scope(self, node: ast.AST) -> ScopeNode:
        return self.scope_of.get(id(node), self.tree)

    def enclosing_function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        scope = self.scope(node)
        return scope if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) else None

    # ------------------------------------------------------------------ positions
    def span(self, node: ast.AST) -> tuple[int, int]:
        """Character offsets ``[start, end)`` of ``node`` in the file."""
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        return start, self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def offset(self, lineno: int, byte_col: int) -> int:
        line = self.doc.line_text(lineno)
        col = byte_col if line.isascii() else len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))
        return self.doc.offset(lineno, col + 1)

    def source(self, node: ast.AST, limit: int = 60) -> str:
        """The node's source text, shortened to one line of at most ``limit`` characters."""
        start, end = self.span(node)
        text = " ".join(self.doc.text[start:end].split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


def walk(tree: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` in source order (depth first), which keeps findings in line order."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


_CACHE: list[Module] = []


def module(doc: LintDocument) -> Module:
    """The :class:`Module` of a ``python`` document, built once per document."""
    if _CACHE and _CACHE[0].doc is doc:
        return _CACHE[0]
    mod = Module(doc)
    _CACHE[:] = [mod]
    return mod
