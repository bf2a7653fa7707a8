"""OpenAI Responses request bodies, one per line, with server-side history rebuilt.

A line is a body ``{"model", "instructions"?, "input": str | [items], "tools"?,
"reasoning"?, "previous_response_id"? | "conversation"?, "store"?}`` or a Batch
input line whose ``url`` is ``/v1/responses``. Rendering is
:mod:`responses_render`'s (effort, instructions, tools, then the items).

**History.** A body that names ``previous_response_id`` (or a ``conversation``)
is sent after everything that response saw and produced, so its prompt is::

    prefix of THIS body (effort, instructions, tools: they are not carried over)
    + the previous response's items (its own history + its input + its output)
    + this body's input items + generation prompt

The previous response's output is known only if the trace recorded it. The
line may carry ``response``: the Response object ``{"id", "output": [...],
"usage", "created_at"}`` (or a Batch output's ``{"status_code", "body": {...}}``),
or top-level ``response_id`` and ``output``. A body that names a response no
earlier line recorded, or one recorded without ``output``, is a ``file:line``
error (``--skip-invalid`` skips it, and so its followers). An unknown
``conversation`` starts empty (items added through the Conversations API
outside the trace are not seen). ``store`` is not checked. Parameters other
than these (``tool_choice``, ``text.format``, ``truncation``...) are not rendered.

Reasoning items older than the latest user message are left out of a prompt,
as the API drops them. Reasoning is encrypted: an output reasoning item
renders as pseudo tokens keyed by its ``id`` (else its ciphertext), as many as
the response billed in ``output_tokens_details.reasoning_tokens`` (split evenly
over its reasoning items); an input reasoning item reuses the count of the
output item with its ``id``, else renders empty. Item types
``responses_render`` does not know that end in ``_call``/``_output`` (or that
a response produced: file search, MCP, code interpreter...) render as their
JSON, without ``id``/``status``, as a stand-in of about the right size;
``item_reference`` is not resolved (an error).

**Memory.** Each response keeps its own items (rendered once) and a link to
the response it continued, never a copy of its history: memory grows with the
file's distinct items, O(file), and stays for the whole file, since any later
line may continue any earlier response.

**Fields.** ``request_id``: ``custom_id``, ``metadata.request_id``, the
response's ``id``, else ``line-{n}``. ``session_id``: ``metadata.session_id``,
the ``conversation``, the previous response's session, ``prompt_cache_key``,
``user``, ``safety_identifier``, else the request id (a chain root starts a
session). ``org``: ``metadata.org``. ``arrival``: the response's
``created_at``. Billed: ``input_tokens`` and
``input_tokens_details.cached_tokens`` (:func:`bodies.openai_usage`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kvcache.engine.traces import bodies
from kvcache.engine.traces.bodies import attach_billed
from kvcache.engine.traces.openai_chat import load_batch_output
from kvcache.engine.traces.records import FieldReader, Segment, TraceRecord, cache_params, tool_list
from kvcache.engine.traces.render import GENERATION_PROMPT, RenderError
from kvcache.engine.traces.responses_render import (
    MODEL_ITEM_TYPES, OUTPUT_ITEM_TYPES, body, render_item, render_prefix, render_reply_items,
)
from kvcache.engine.traces.tokenizer import pseudo_tokens

NAME = bodies.RESPONSES
__all__ = ["NAME", "Parser", "attach_billed", "load_batch_output", "looks_like"]

_KNOWN = frozenset({"message", *MODEL_ITEM_TYPES, *OUTPUT_ITEM_TYPES})


@dataclass(slots=True, frozen=True)
class _Item:
    """One history item, rendered once; ``kind`` is ``reasoning``, ``user`` or ``""``."""

    segs: tuple[Segment, ...]
    kind: str


@dataclass(slots=True, frozen=True)
class _Node:
    """A recorded response: its own items (input, then output) after its parent's."""

    parent: _Node | None
    items: tuple[_Item, ...]
    session: str


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a file's first JSON object is a Responses body or a /v1/responses Batch line."""
    return bodies.flavour(obj) == NAME


def _history(node: _Node | None) -> list[_Item]:
    chain: list[_Node] = []
    while node is not None:
        chain.append(node)
        node = node.parent
    return [item for n in reversed(chain) for item in n.items]


def _stand_in(item: dict[str, Any], model_made: bool) -> list[Segment]:
    """An item type the template does not know, as its JSON under the right header."""
    kind = item["type"]
    if not (kind.endswith(("_call", "_output")) or model_made):
        raise RenderError(f"unsupported item type {kind!r}")
    header = "<|tool|>\n" if kind.endswith("_output") else GENERATION_PROMPT
    data = json.dumps({k: v for k, v in item.items() if k not in ("id", "status")}, ensure_ascii=False)
    return [header, *body([f"<|{kind}|>\n{data}\n"])]


def _reply(out: list[_Item]) -> list[Segment] | None:
    """A response's output as the segments the next call's history carries after
    the generation prompt; ``None`` unless it starts as the model's turn."""
    if not out or out[0].segs[0] != GENERATION_PROMPT:
        return None
    return render_reply_items([list(o.segs) for o in out]) or None


class Parser:
    """Parses lines in order, remembering each recorded response to follow chains."""

    def __init__(self) -> None:
        # response or conversation id -> its node (None: recorded without output)
        self._states: dict[str, _Node | None] = {}
        self._reasoning: dict[str, int] = {}  # reasoning item id -> pseudo tokens it got

    def _item(self, raw: Any, model_made: bool, reasoning_tokens: int = 0) -> _Item:
        if not isinstance(raw, dict):
            raise RenderError("items must be objects")
        kind = raw.get("type", "message")  # EasyInputMessage has no 'type'
        if kind == "reasoning":
            key = raw.get("id") or raw.get("encrypted_content")
            if not isinstance(key, str) or not key:
                return _Item(tuple(render_item(raw)), "reasoning")  # nothing to key it by: empty
            if not raw.get("id"):
                key = hashlib.sha1(key.encode()).hexdigest()
            if model_made:
                self._reasoning[key] = reasoning_tokens
            tokens = pseudo_tokens(f"openai-responses/reasoning/{key}", self._reasoning.get(key, 0))
            return _Item(tuple(render_item(raw, reasoning=tokens)), "reasoning")
        if isinstance(kind, str) and kind not in _KNOWN:
            return _Item(tuple(_stand_in(raw, model_made)), "")
        user = kind == "message" and raw.get("role") == "user"
        return _Item(tuple(render_item(raw)), "user" if user else "")

    def _outputs(self, output: Any, usage: Any) -> list[_Item]:
        if not isinstance(output, list):
            raise RenderError("expected the response's 'output' to be a list of items")
        details = usage.get("output_tokens_details") if isinstance(usage, dict) else None
        total = details.get("reasoning_tokens") if isinstance(details, dict) else 0
        total = total if type(total) is int and total > 0 else 0
        n = sum(1 for o in output if isinstance(o, dict) and o.get("type") == "reasoning")
        items: list[_Item] = []
        for o in output:  # the billed reasoning, split evenly (the remainder to the last)
            is_reasoning = isinstance(o, dict) and o.get("type") == "reasoning"
            share = total // n if is_reasoning else 0
            n -= is_reasoning
            total -= share
            items.append(self._item(o, True, share))
        return items

    def _parent(self, f: FieldReader) -> tuple[_Node | None, str | None]:
        prev, conv = f.str_or_none("previous_response_id"), f.obj.get("conversation")
        conv = conv.get("id") if isinstance(conv, dict) else conv
        if prev is not None and conv:
            raise f.fail("a body cannot name both 'previous_response_id' and 'conversation'")
        if conv is not None and not isinstance(conv, str):
            raise f.fail("expected 'conversation' to be an id or an object with an 'id'")
        key = prev or (f"conversation/{conv}" if conv else None)  # ids of two kinds, one map
        if key is None or (conv and key not in self._states):
            return None, conv or None
        if key not in self._states:
            raise f.fail(f"previous_response_id {key!r} is not a response recorded on an earlier line "
                         "(record each response's 'id' and 'output' next to its body)")
        node = self._states[key]
        if node is None:
            raise f.fail(f"{prev or conv!r} was recorded without its 'output', so its history cannot be rebuilt")
        return node, conv or None

    def __call__(self, obj: dict[str, Any], path: str, line: int) -> TraceRecord:
        """One Responses body (or Batch input line) as a record.

        Raises:
            TraceError: ``path:line`` and what was expected.
        """
        env = bodies.unwrap(obj, path, line)
        f = FieldReader(env.body, path, line)
        if env.anthropic_batch or (env.url is not None and bodies.endpoint(env.url) != NAME):
            raise f.fail("not a Responses line; expected a body with 'input' or a Batch line for '/v1/responses'")
        raw_input = env.body.get("input")
        if isinstance(raw_input, str):
            raw_input = [{"type": "message", "role": "user", "content": raw_input}]
        if raw_input is not None and not isinstance(raw_input, list):
            raise f.fail("expected 'input' to be a string or a list of items (an OpenAI Responses body)")
        instructions = env.body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise f.fail("expected 'instructions' to be a string")
        effort = env.body.get("reasoning", {}).get("effort") if isinstance(env.body.get("reasoning"), dict) else None
        parent, conv = self._parent(f)
        resp = bodies.recorded_response(obj, env.body)
        usage = bodies.recorded_usage(obj, env.body, resp)
        billed = bodies.openai_usage(usage, f)
        output = resp["output"] if "output" in resp else obj.get("output")
        try:
            prefix = render_prefix(instructions, env.body.get("tools"), effort if isinstance(effort, str) else None)
            new = [self._item(x, False) for x in raw_input or []]
            out = self._outputs(output, usage) if output is not None else []
        except RenderError as e:
            raise f.fail(str(e)) from None
        items = _history(parent) + new
        last_user = max((i for i, it in enumerate(items) if it.kind == "user"), default=-1)
        kept = [s for i, it in enumerate(items) if not (it.kind == "reasoning" and i < last_user) for s in it.segs]
        r = FieldReader(resp, path, line)
        resp_id = r.str_or_none("id") or FieldReader(obj, path, line).str_or_none("response_id")
        request_id = env.custom_id or bodies.metadata_str(env.body, "request_id") or resp_id or f"line-{line}"
        session = (
            bodies.metadata_str(env.body, "session_id") or conv or (parent.session if parent else None)
            or bodies.openai_session(f) or request_id
        )
        node = _Node(parent, tuple(new + out), session) if output is not None else None
        for key in (resp_id, f"conversation/{conv}" if conv else None):
            if key:
                self._states[key] = node
        return TraceRecord(
            line=line, request_id=request_id, session_id=session, org=bodies.metadata_str(env.body, "org"),
            arrival=r.number_or_none("created_at"), model=f.str_or_none("model"),
            segments=[*prefix, *kept, GENERATION_PROMPT],
            output_segments=_reply(out),
            output_length=FieldReader(usage, path, line).count_or_none("output_tokens") if isinstance(usage, dict) else None,
            billed=billed, tools=tool_list(env.body.get("tools")), params=cache_params(env.body),
        )
