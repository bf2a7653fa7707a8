"""OpenHands event trajectories (a JSON list of events): one record per LLM call.

Messages are rebuilt from the events as OpenHands' ``ConversationMemory``
builds them, in kvcache's template (tools -> system -> messages):

==================================  =========================================
event                               message
==================================  =========================================
``system`` action                   tools and system (``args.tools``, ``args.content``)
``message`` action                  ``user`` (source user) or ``assistant``: ``args.content``
tool action (``run``, ``edit``...)  ``assistant``: the ``model_response`` message (content
                                    if not blank, tool calls), placed when all its tool
                                    calls have results, then the results in call order
observation                         ``tool`` result when it names a tool call, else ``user``:
                                    ``extras.formatted_output_and_error`` (an oh_aci edit's
                                    output; ``content`` is a diff) else ``content``
``finish`` action                   ``assistant``: ``args.thought`` (+ the response content)
``run`` action from the user        ``user``: ``User executed the command:\n{command}``
==================================  =========================================

Ignored by rule (never sent): state changes, ``null``, ``recall``, pause and
condensation events. OpenHands adds exit-code lines and templates the events
do not hold, so counts are estimates (billed calibration absorbs the rest).

* **Calls.** An action with ``tool_call_metadata.model_response`` opens a call
  at the first event of that response ``id`` (a response with several tool
  calls is several events; observations repeat it). An agent ``message``
  action without one is a call too (a reply without tool calls, logged without
  its response): no bill, the file's model. The prompt is every message built
  before the call's event; ``output_segments`` is the message the call adds.
* **Prefix.** Logs older than ``SystemMessageAction`` hold no system prompt or
  tools: the prompt then starts with ``pseudo_tokens(PREFIX_KEY/model, N)``,
  ``N`` = ``assume_prefix_tokens``, else the first billed call's
  ``prompt_tokens`` minus our count of its prompt (the model's local
  vocabulary). Keyed by model: sessions share it as they share OpenHands'
  prompt on one provider.
* **Usage.** ``billed`` = ``prompt_tokens``, ``prompt_tokens_details.cached_tokens``
  (else ``cache_read_input_tokens``, else 0), ``cache_creation_input_tokens``
  written; malformed usage is a :class:`SkippedLine` and the call stays unbilled.
* ``arrival``: the event's ``timestamp`` (ISO, UTC when naive); ``session_id``:
  the file stem; ``request_id``: the response id, else ``{stem}/{n}``.
* Skipped events are named ``events[i]``, at line 1 of a document (at their
  own line in a JSONL of events).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kvcache.engine.traces.records import BilledUsage, ReaderOptions, Segment, SkippedLine, TraceRecord
from kvcache.engine.traces.render import GENERATION_PROMPT, RenderError, render_segments
from kvcache.engine.traces.tokenizer import load_encoder, pseudo_tokens, tokenizer_for_model

NAME = "openhands"
FILE_LEVEL = True
PREFIX_KEY = "openhands/system+tools"
IGNORED_ACTIONS = frozenset({"null", "change_agent_state", "recall", "pause", "resume", "stop",
                             "condensation", "condensation_request"})
IGNORED_OBSERVATIONS = frozenset({"null", "agent_state_changed", "recall"})
ERROR_NOTE = "\n[Error occurred in processing last action]"  # OpenHands appends it to errors


class _BadEvent(ValueError):
    """An event this reader cannot use (reported as a SkippedLine)."""


def _is_event(e: Any) -> bool:
    return isinstance(e, dict) and isinstance(e.get("source"), str) and "timestamp" in e and (
        isinstance(e.get("action"), str) or isinstance(e.get("observation"), str))


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a file's first object is an OpenHands event list (or one event)."""
    doc = obj.get("document")
    return _is_event(doc[0] if isinstance(doc, list) and doc else obj)


@dataclass(slots=True)
class _Call:
    line: int
    pos: int  # messages in the prompt
    reply: str  # the body of the message it adds
    event: dict[str, Any]
    response: dict[str, Any] | None


class _Trajectory:
    """Messages and calls of one event list, built in one pass."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.head: list[str] = []  # tools and system segments
        self.messages: list[str] = []  # header, body, header, body...
        self.pending: dict[str, tuple[str, list[str]]] = {}  # response key -> (body, tool call ids)
        self.results: dict[str, list[str]] = {}  # tool call id -> its [header, body]
        self.calls: dict[str, _Call] = {}
        self.skipped: list[SkippedLine] = []

    def add(self, i: int, line: int, ev: Any) -> None:
        try:
            self._add(i, line, ev)
        except (RenderError, _BadEvent) as e:
            self.skipped.append(SkippedLine(line, f"events[{i}]: {e}", self.path))

    def _add(self, i: int, line: int, ev: Any) -> None:
        if not _is_event(ev):
            raise _BadEvent("expected an event object with 'source', 'timestamp' and an 'action' or 'observation'")
        action, args = ev.get("action"), ev.get("args") or {}
        if not isinstance(args, dict):
            raise _BadEvent("expected 'args' to be an object")
        meta = ev.get("tool_call_metadata")
        response = _response(meta)
        if action is None:
            self._observation(ev, meta)
        elif action == "system":
            self.head = render_segments(args.get("tools"), _text(args.get("content")), [])[:-1]
        elif action in IGNORED_ACTIONS:
            pass
        elif action == "message" or action == "finish" or (action == "run" and ev["source"] == "user" and not meta):
            role = "user" if ev["source"] == "user" else "assistant"
            if action == "message":
                text = _text(args.get("content", ev.get("message")))
            elif action == "run":
                text = "User executed the command:\n" + _text(args.get("command"))
            else:
                text = _finish_text(args, response)
            header, body = render_segments(None, None, [{"role": role, "content": text}])[:2]
            if role == "assistant" and (response is not None or action == "message"):
                self._open_call(i, line, ev, response, body)
            self.messages += [header, body]
        elif response is None:
            raise _BadEvent(f"an agent {action!r} action needs tool_call_metadata.model_response (function calling)")
        else:
            msg = response["choices"][0]["message"]
            content = msg["content"] if isinstance(msg.get("content"), str) and msg["content"].strip() else ""
            calls = msg.get("tool_calls") or []
            body = render_segments(None, None, [{"role": "assistant", "content": content, "tool_calls": calls}])[1]
            self._open_call(i, line, ev, response, body)
            # One entry per response; a late repeat never completes again (its results were used).
            self.pending[_key(response)] = (body, [c.get("id") for c in calls])
        self._flush()

    def _observation(self, ev: dict[str, Any], meta: Any) -> None:
        kind = ev["observation"]
        if kind in IGNORED_OBSERVATIONS:
            return
        extras = ev.get("extras")
        shown = extras.get("formatted_output_and_error") if isinstance(extras, dict) else None
        # OpenHands sends an oh_aci edit's tool output, not the diff the event keeps as content.
        text = shown if isinstance(shown, str) else _text(ev.get("content", ev.get("message")))
        text += ERROR_NOTE if kind == "error" else ""
        call_id = meta.get("tool_call_id") if isinstance(meta, dict) else None
        if isinstance(call_id, str):
            self.results[call_id] = render_segments(None, None, [{"role": "tool", "tool_call_id": call_id, "content": text}])[:2]
        else:
            self.messages += render_segments(None, None, [{"role": "user", "content": text}])[:2]

    def _open_call(self, i: int, line: int, ev: dict[str, Any], response: dict[str, Any] | None, body: str) -> None:
        key = f"events[{i}]" if response is None else _key(response)
        if key not in self.calls:  # later events of the same response are not calls
            self.calls[key] = _Call(line, len(self.messages), body, ev, response)

    def _flush(self) -> None:
        """Place each assistant message whose tool calls all have results (OpenHands waits for them)."""
        for key, (body, ids) in list(self.pending.items()):
            if all(t in self.results for t in ids):
                self.messages += ["<|assistant|>\n", body]
                for t in ids:
                    self.messages += self.results.pop(t)
                del self.pending[key]


def _response(meta: Any) -> dict[str, Any] | None:
    """``tool_call_metadata.model_response``, checked to hold ``choices[0].message``."""
    response = meta.get("model_response") if isinstance(meta, dict) else None
    choices = response.get("choices") if isinstance(response, dict) else None
    if response is not None and not (choices and isinstance(choices, list) and isinstance(choices[0], dict)
                                     and isinstance(choices[0].get("message"), dict)):
        raise _BadEvent("expected tool_call_metadata.model_response to hold choices[0].message")
    return response


def _key(response: dict[str, Any]) -> str:
    rid = response.get("id")  # an id-less response: its message tells it apart
    return rid if isinstance(rid, str) else json.dumps(response["choices"][0]["message"], sort_keys=True)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadEvent(f"expected text to be a string, got {type(value).__name__}")
    return value


def _finish_text(args: dict[str, Any], response: dict[str, Any] | None) -> str:
    thought = _text(args.get("thought"))
    content = response["choices"][0]["message"].get("content") if response else None
    if not isinstance(content, str) or not content or content == thought:
        return thought
    return f"{thought}\n{content}" if thought else content


def _billed(response: dict[str, Any] | None) -> BilledUsage | str | None:
    """The call's bill, ``None`` without usage, or why the usage is unusable."""
    usage = response.get("usage") if response else None
    if usage is None:
        return None
    if not isinstance(usage, dict):
        return "expected usage to be an object"
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = usage.get("cache_read_input_tokens") or 0 if cached is None else cached  # litellm's Anthropic keys
    prompt, write = usage.get("prompt_tokens"), usage.get("cache_creation_input_tokens")
    if not (_count(prompt) and _count(cached)) or cached > prompt:
        return "expected usage.prompt_tokens and its cached tokens to be counts (cached <= prompt)"
    return BilledUsage(prompt, cached, write if _count(write) else None)


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _epoch(value: Any) -> float | None:
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        return None


def _events(objects: Iterable[tuple[int, dict]]) -> Iterator[tuple[int, Any]]:
    for line, obj in objects:
        doc = obj.get("document") if isinstance(obj, dict) else None
        yield from ((line, ev) for ev in doc) if isinstance(doc, list) else [(line, obj)]


def read_records(
    path: str, objects: Iterable[tuple[int, dict]], options: ReaderOptions
) -> Iterator[TraceRecord | SkippedLine]:
    """One record per LLM call of one trajectory, then its skipped events (see the module docstring)."""
    t = _Trajectory(path)
    for i, (line, ev) in enumerate(_events(objects)):
        t.add(i, line, ev)
    calls = list(t.calls.items())
    models = [m for _, c in calls if c.response and isinstance(m := c.response.get("model"), str)]
    file_model = models[0] if models else None
    n = options.assume_prefix_tokens
    bills = [_billed(c.response) for _, c in calls]
    if n is None and not t.head:  # the log leaves out OpenHands' system prompt and tools
        first = next(((c, b) for (_, c), b in zip(calls, bills) if isinstance(b, BilledUsage)), None)
        if first is not None:
            encode = load_encoder(tokenizer_for_model(file_model))
            visible = sum(len(encode(s)) for s in [*t.messages[: first[0].pos], GENERATION_PROMPT])
            n = max(0, first[1].prompt_tokens - visible)
    prefix: list[Segment] = [pseudo_tokens(f"{PREFIX_KEY}/{file_model}", n)] if n else []
    stem = Path(path).stem
    for k, ((key, c), bill) in enumerate(zip(calls, bills), start=1):
        if isinstance(bill, str):
            yield SkippedLine(c.line, f"call {k}: {bill}", path)
        model = c.response.get("model") if c.response else None
        usage = c.response.get("usage") if c.response else None
        out = usage.get("completion_tokens") if isinstance(usage, dict) else None
        yield TraceRecord(
            line=c.line, request_id=key if c.response and isinstance(c.response.get("id"), str) else f"{stem}/{k}",
            session_id=stem, arrival=_epoch(c.event.get("timestamp")),
            model=model if isinstance(model, str) else file_model,
            segments=[*prefix, *t.head, *t.messages[: c.pos], GENERATION_PROMPT], output_segments=[c.reply],
            output_length=out if _count(out) else None, billed=bill if isinstance(bill, BilledUsage) else None, path=path,
        )
    yield from t.skipped

