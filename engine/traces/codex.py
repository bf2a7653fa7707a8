"""Codex CLI rollouts (``~/.codex/sessions/**/rollout-*.jsonl``): one record per API call.

Lines are ``{timestamp, type, payload}``. The rules:

* **Calls.** An ``event_msg`` ``token_count`` ends a call, counted only when its
  ``total_token_usage`` changes (Codex repeats the event with fresh rate limits).
  Billed: ``last_token_usage`` (``input_tokens`` includes the cached ones), else
  the difference to the previous total.
* **Reply, prompt.** The model's items (reasoning, assistant messages, tool calls)
  recorded after the previous call, in the run that ends at the event, are the
  reply; every item before them is the prompt, rendered by ``responses_render``
  after the effort (latest ``turn_context``), ``base_instructions`` and tools.
* **Reasoning** is encrypted: pseudo tokens keyed by the ciphertext, as many as
  the call billed as ``reasoning_output_tokens`` (split by ciphertext size; with
  no bill, Codex's estimate ``len * 3/4 - 650`` bytes). The API drops reasoning
  older than the latest user message, so the prompt does too: a new user turn
  breaks the cache at the previous turn's first reasoning item, as bills show.
* **Tools** are not in the file: pseudo tokens after the instructions,
  ``assume_prefix_tokens`` of them, else what the first call's billed input
  exceeds our count of its prompt (model's local vocabulary). Keyed by session:
  Codex sends the session id as ``prompt_cache_key``, so sessions share only the
  instructions, warm for all Codex users (3,456 cached tokens on first calls).
* **Redacted text** ``[REDACTED_... len=N sha=X]``: ``ceil(N / 4)`` pseudo tokens
  keyed by ``(X, N)``; 4 bytes a token is Codex's own estimate.
* **Tool outputs** are cut to the ``turn_context`` truncation budget x1.2, as Codex
  cuts the history it sends (the rollout keeps them whole).
* **Compaction:** a ``compacted`` line replaces the history by its
  ``replacement_history``, else (as Codex's local compaction) by the user
  messages and the summary.
* **Ignored by rule:** other ``event_msg`` types (UI copies of items), ``info: null``
  and repeated events, a second ``session_meta``, ``ghost_snapshot`` items (never
  sent), items after the last call (no bill). Other bad lines: :class:`SkippedLine`.
* ``arrival``: the first reply item's time (nearest prefill), else the event's.
  ``request_id``: ``{session}/{n}``, n counting calls from 1.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kvcache.engine.traces.records import BilledUsage, ReaderOptions, Segment, SkippedLine, TraceRecord
from kvcache.engine.traces.render import GENERATION_PROMPT, RenderError
from kvcache.engine.traces.responses_render import (
    OUTPUT_ITEM_TYPES, effort_segments, instructions_segments, is_model_item, render_item, render_reply_items, tools_segments,
)
from kvcache.engine.traces.tokenizer import load_encoder, pseudo_tokens, tokenizer_for_model

NAME = "codex"
FILE_LEVEL = True
BYTES_PER_TOKEN = 4  # Codex's APPROX_BYTES_PER_TOKEN
REDACTED = re.compile(r"\[REDACTED_[A-Z_]+ len=(\d+) sha=([0-9A-Za-z]+)\]")
_LINE_TYPES = frozenset({"session_meta", "response_item", "event_msg", "turn_context", "compacted"})
_USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
_OPAQUE = ("reasoning", "compaction")  # encrypted items: pseudo tokens


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether the first JSON object of a file is a Codex rollout line."""
    return obj.get("type") in _LINE_TYPES and isinstance(obj.get("payload"), dict)


def text_segments(text: str) -> list[Segment]:
    """Text with each redacted span replaced by its pseudo tokens."""
    out: list[Segment] = []
    pos = 0
    for m in REDACTED.finditer(text):
        n = int(m.group(1))
        out += [text[pos:m.start()], pseudo_tokens(f"codex-redacted/{m.group(2)}/{n}", math.ceil(n / BYTES_PER_TOKEN))]
        pos = m.end()
    return [s for s in (*out, text[pos:]) if s]


def truncated_segments(text: str, budget: int | None) -> list[Segment]:
    """A tool output as Codex keeps it in history: head and tail of ``budget`` bytes
    around a marker; oversized redacted text becomes ``budget / 4`` pseudo tokens."""
    spans = list(REDACTED.finditer(text))
    size = len(REDACTED.sub("", text).encode()) + sum(int(m.group(1)) for m in spans)
    if budget is None or size <= budget:
        return text_segments(text)
    if spans:
        key = hashlib.sha1(text.encode()).hexdigest()
        return [pseudo_tokens(f"codex-truncated/{key}/{budget}", math.ceil(budget / BYTES_PER_TOKEN))]
    raw = text.encode()
    head, tail = raw[: budget // 2], raw[len(raw) - (budget - budget // 2):]
    removed = math.ceil((size - budget) / BYTES_PER_TOKEN)
    return [f"{head.decode(errors='ignore')}…{removed} tokens truncated…{tail.decode(errors='ignore')}"]


@dataclass(slots=True)
class _Item:
    """One history item, rendered once (reasoning once its length is known)."""

    payload: dict[str, Any]
    timestamp: Any
    segs: list[Segment] | None = None


class _Rollout:
    """The state of one rollout file while its lines are read."""

    def __init__(self, path: str, options: ReaderOptions) -> None:
        self.path, self.session = path, Path(path).stem
        n = options.assume_prefix_tokens
        self.tools: tuple[int, ...] | None = None if n is None else pseudo_tokens(f"codex-tools/{n}", n)
        self.instructions: list[Segment] = []
        self.meta_seen = False
        self.model: str | None = None
        self.effort: str | None = None
        self.budget: int | None = None  # tool-output bytes kept in history
        self.items: list[_Item] = []
        self.since = 0  # first item recorded after the previous call
        self.total: tuple[int, ...] | None = None
        self.calls = 0

    def skip(self, line: int, reason: str) -> SkippedLine:
        return SkippedLine(line, reason, self.path)

    def session_meta(self, p: dict[str, Any]) -> None:
        if self.meta_seen:
            return  # the first one defines the session
        self.meta_seen = True
        self.session = str(p.get("id") or self.session)
        base = p.get("base_instructions")
        text = base.get("text") if isinstance(base, dict) else base
        self.instructions = instructions_segments(text, text_segments) if isinstance(text, str) else []

    def turn_context(self, p: dict[str, Any]) -> None:
        self.model = p.get("model") or self.model
        mode = p.get("collaboration_mode")
        settings = mode.get("settings") if isinstance(mode, dict) else None
        fallback = settings.get("reasoning_effort") if isinstance(settings, dict) else None
        self.effort = p.get("effort") or fallback or self.effort
        policy = p.get("truncation_policy")
        if isinstance(policy, dict) and isinstance(policy.get("limit"), int):
            per_unit = BYTES_PER_TOKEN if policy.get("mode") == "tokens" else 1
            self.budget = int(policy["limit"] * 1.2) * per_unit  # Codex's serialization allowance

    def add(self, p: dict[str, Any], stamp: Any, line: int) -> SkippedLine | None:
        kind = p.get("type")
        if kind == "ghost_snapshot":
            return None
        item = _Item(p, stamp)
        if kind not in _OPAQUE:
            budget = self.budget if kind in OUTPUT_ITEM_TYPES else None
            try:
                item.segs = render_item(p, lambda t: truncated_segments(t, budget))
            except RenderError as e:
                return self.skip(line, f"response_item: {e}")
        self.items.append(item)
        return None

    def compacted(self, p: dict[str, Any], line: int) -> SkippedLine | None:
        """Codex replaced its history: by ``replacement_history`` when given, else
        (as its local compaction does) by the user messages and the summary."""
        new = p.get("replacement_history")
        if not isinstance(new, list):
            summary = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": str(p.get("message", ""))}]}
            new = [*(i.payload for i in self.items if i.payload.get("role") == "user"), summary]
        self.items = []
        bad = [self.add(x, None, line) if isinstance(x, dict) else self.skip(line, "not an object") for x in new]
        self.since = len(self.items)
        errors = [b.reason for b in bad if b is not None]
        return self.skip(line, f"compacted: {len(errors)} unusable replacement items ({errors[0]})") if errors else None

    def usage(self, info: Any, line: int) -> tuple[int, ...] | SkippedLine | None:
        """This call's (input, cached, output, reasoning); ``None`` for a repeat."""
        if info is None:
            return None
        total = _counts(info.get("total_token_usage") if isinstance(info, dict) else None)
        if total is None:
            return self.skip(line, "token_count without a valid info.total_token_usage")
        if total == self.total:
            return None
        last = _counts(info.get("last_token_usage"))
        if last is None:  # derive the call from consecutive totals
            last = tuple(a - b for a, b in zip(total, self.total or (0,) * len(total)))
            if min(last) < 0:
                return self.skip(line, "total_token_usage went down and last_token_usage is missing")
        self.total = total
        return self.skip(line, "cached_input_tokens exceeds input_tokens") if last[1] > last[0] else last

    def opaque(self, item: _Item, tokens: int | None = None) -> list[Segment]:
        """A reasoning or compaction item: pseudo tokens keyed by its ciphertext."""
        if item.segs is None:
            key, size = _cipher(item)
            if tokens is None:  # Codex's estimate of its model-visible bytes
                tokens = math.ceil(max(0, size * 3 // 4 - 650) / BYTES_PER_TOKEN)
            item.segs = render_item({"type": "reasoning"}, reasoning=pseudo_tokens(f"codex-reasoning/{key}", tokens))
        return item.segs

    def call(self, usage: tuple[int, ...], stamp: Any, line: int) -> tuple[TraceRecord, list[Segment]]:
        start = len(self.items)
        while start > self.since and is_model_item(self.items[start - 1].payload):
            start -= 1
        reply, prompt_items = self.items[start:], self.items[:start]
        thoughts = [i for i in reply if i.payload.get("type") == "reasoning"]
        sizes = [_cipher(i)[1] for i in thoughts]
        left, weight = usage[3], sum(sizes) or 1
        for n, item in enumerate(thoughts):  # the billed reasoning, split by ciphertext size
            share = left if n == len(thoughts) - 1 else min(left, round(usage[3] * sizes[n] / weight))
            self.opaque(item, share)
            left -= share
        last_user = max((k for k, i in enumerate(prompt_items) if i.payload.get("role") == "user"), default=-1)
        history: list[Segment] = []
        for k, item in enumerate(prompt_items):
            kind = item.payload.get("type")
            if kind == "reasoning" and k < last_user:
                continue  # the API drops reasoning older than the latest user message
            history += self.opaque(item) if kind in _OPAQUE else item.segs or []
        head = [*effort_segments(self.effort), *self.instructions]
        if self.tools is None:
            seen = _count([*head, *tools_segments((0,)), *history, GENERATION_PROMPT], self.model) - 1
            self.tools = pseudo_tokens(f"codex-tools/{self.session}", max(0, usage[0] - seen))
        segments = [*head, *tools_segments(self.tools), *history, GENERATION_PROMPT]
        out = render_reply_items([self.opaque(i) if i.segs is None else i.segs for i in reply]) if reply else []
        self.calls += 1
        self.since = len(self.items)
        rec = TraceRecord(
            line=line, request_id=f"{self.session}/{self.calls}", session_id=self.session,
            arrival=_epoch(reply[0].timestamp if reply and reply[0].timestamp else stamp), model=self.model,
            segments=segments, output_segments=out or None,
            output_length=usage[2], billed=BilledUsage(prompt_tokens=usage[0], cached_tokens=usage[1]), path=self.path,
            params={"reasoning_effort": self.effort} if self.effort else None,
        )
        return rec, out


def _counts(obj: Any) -> tuple[int, ...] | None:
    if not isinstance(obj, dict) or "input_tokens" not in obj:
        return None
    vals = tuple(obj.get(k, 0) for k in _USAGE_KEYS)
    return vals if all(type(v) is int and v >= 0 for v in vals) else None


def _cipher(item: _Item) -> tuple[str, int]:
    """Key and byte size of an item's ciphertext (a redacted one: its sha and length)."""
    enc = str(item.payload.get("encrypted_content") or "")
    m = REDACTED.fullmatch(enc)
    return (f"{m.group(2)}/{m.group(1)}", int(m.group(1))) if m else (hashlib.sha1(enc.encode()).hexdigest(), len(enc))


def _count(segments: list[Segment], model: str | None) -> int:
    """Our token count of segments, text in the model's local vocabulary."""
    encode = load_encoder(tokenizer_for_model(model))
    return sum(len(s) if isinstance(s, tuple) else len(encode(s)) for s in segments)


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_calls(
    path: str, objects: Iterable[tuple[int, dict[str, Any]]], options: ReaderOptions
) -> Iterator[tuple[TraceRecord, list[Segment]] | SkippedLine]:
    """Each call's record with its reply as segments (what the next call's history
    carries after this call's prompt), or a :class:`SkippedLine`."""
    r = _Rollout(path, options)
    for line, obj in objects:
        kind, p = obj.get("type"), obj.get("payload")
        skipped: SkippedLine | None = None
        if kind not in _LINE_TYPES or not isinstance(p, dict):
            skipped = r.skip(line, f"expected a Codex rollout line with a payload object, got type {kind!r}")
        elif kind == "session_meta":
            r.session_meta(p)
        elif kind == "turn_context":
            r.turn_context(p)
        elif kind == "response_item":
            skipped = r.add(p, obj.get("timestamp"), line)
        elif kind == "compacted":
            skipped = r.compacted(p, line)
        elif p.get("type") == "token_count":
            usage = r.usage(p.get("info"), line)
            if isinstance(usage, tuple):
                yield r.call(usage, obj.get("timestamp"), line)
            skipped = usage if isinstance(usage, SkippedLine) else None
        if skipped is not None:
            yield skipped


def read_records(
    path: str, objects: Iterable[tuple[int, dict[str, Any]]], options: ReaderOptions
) -> Iterator[TraceRecord | SkippedLine]:
    """One :class:`TraceRecord` per API call of one rollout file (see the module docstring).

    The reply travels as ``output_segments`` (it may hold pseudo tokens for
    reasoning and redacted text), so the next call can hit it.
    """
    for item in read_calls(path, objects, options):
        yield item if isinstance(item, SkippedLine) else item[0]
