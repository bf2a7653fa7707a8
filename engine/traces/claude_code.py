"""Claude Code session transcripts (``~/.claude/projects/<project>/<session>.jsonl``).

A transcript is a tree of lines linked by ``uuid``/``parentUuid``, written as
things happen. The reader yields one :class:`TraceRecord` per API call:

* **Calls.** One response is written as several ``assistant`` lines, one per
  content block, repeating the same ``requestId`` and usage. Lines are grouped
  by ``requestId`` (else ``message.id``; a line with neither is a
  :class:`SkippedLine`), so a call is never counted twice. ``<synthetic>``
  assistant lines (Claude Code's own error notes) are not calls and not sent.
* **Prompt.** From the call's first line, ``parentUuid`` is followed back to a
  root (``null``, or a uuid the file does not hold). Every line is a link,
  progress and system lines included, but only ``user`` and ``assistant``
  lines are messages. Parallel tool calls make the links branch::

      a1 (req A, tool_use t1) -+- a2 (req A, tool_use t2) -- r2 (result t2)
                               +- r1 (result t1) -- b1 (req B)
      b1's chain: r1, a1, ...   b1's prompt: ..., assistant[a1 a2], user[r2 r1]

  So the prompt also takes every line of each call on the chain and every
  ``tool_result`` line answering one of its ``tool_use`` ids (earlier in the
  file than the call). These lines, in file order, become messages: all lines
  of one call form one assistant message; consecutive user lines form one user
  message (the API merges them too). Other branches (rewinds, edits) are left
  out; a compact boundary has a ``null`` parent, so later calls see the summary.
* **Reply.** ``output_text`` is the whole call rendered as the assistant body
  the next prompt carries, so the next call can hit it.
* **Prefix.** The system prompt and tools are not in the file. The prompt
  starts with ``pseudo_tokens(PREFIX_KEY, N)``, one key for every session so
  that sessions and subagents share it as they share Claude Code's prompt on
  the provider. ``N`` is ``assume_prefix_tokens`` when given, else inferred
  once per file from its first call with usage:
  ``N = max(0, input + cache_read + cache_creation - V)``, where ``V`` counts
  that call's rendered messages and generation prompt in the model's local
  vocabulary (cl100k_base for Claude). The total (not read + write alone) is
  used because the prefix is the part of the billed prompt the file lacks.
  The billed side is in Anthropic's tokens and ``V`` in ours, so ``N`` is an
  estimate; content Claude Code injects mid-session without logging it is
  not in ``V`` either. Calls of a file share one ``N``.
* **Subagent files** (``<session>/subagents/agent-*.jsonl``): a root whose
  parent uuid is in ``<session>.jsonl`` (the compaction agent resends the
  parent conversation) continues into that file; when the file's first call
  with usage does so, the file takes the parent's ``N``, so that the shared
  prefix is the same tokens.
* **Sessions.** ``sessionId``; a sidechain is its own session:
  ``{sessionId}/{file stem}`` in a subagent file, else ``{sessionId}/agent-{agentId}``
  or ``{sessionId}/sidechain/{root uuid}``.
* **Ignored** by rule: ``progress``, ``file-history-snapshot``,
  ``queue-operation``, ``summary``, ``system`` and ``custom-title`` lines
  (Claude Code keeps them for itself; they are not sent). Any other type, and a
  message without usable content, is a :class:`SkippedLine`, but its uuid still
  links the chain; so is a line repeating an earlier line's uuid.
* **Usage.** ``billed`` = input + read + creation as the prompt, read as cached,
  creation as written; ``None`` when the call has no usage (not an error);
  missing cache fields count 0. ``output_length`` is the largest
  ``output_tokens`` of the call's lines (earlier lines hold streaming counts).
  ``cache_ttl`` is ``1h`` when ``usage.cache_creation`` shows 1-hour writes,
  else ``5m`` for 5-minute ones; a call that writes nothing keeps its
  session's last TTL (Claude Code picks one TTL per session), else ``None``.
  A bad or missing ``timestamp`` leaves ``arrival`` ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kvcache.engine.errors import ConfigError
from kvcache.engine.traces import anthropic_render as ar
from kvcache.engine.traces.records import BilledUsage, ReaderOptions, Segment, SkippedLine, TraceRecord
from kvcache.engine.traces.render import END, RenderError
from kvcache.engine.traces.tokenizer import load_encoder, pseudo_tokens, tokenizer_for_model

NAME = "claude-code"
FILE_LEVEL = True
PREFIX_KEY = "claude-code/system+tools"
IGNORED_TYPES = frozenset({"progress", "file-history-snapshot", "queue-operation", "summary", "system", "custom-title"})
_MESSAGE_TYPES = ("user", "assistant")
_FIRST_KEYS = {"file-history-snapshot": "snapshot", "queue-operation": "operation", "summary": "leafUuid"}


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether the first JSON object of a file is a Claude Code transcript line."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        return False
    if kind in _FIRST_KEYS:
        return _FIRST_KEYS[kind] in obj
    links = "parentUuid" in obj and ("sessionId" in obj or "uuid" in obj)
    return links and kind in (*_MESSAGE_TYPES, "progress", "system")


@dataclass(slots=True, eq=False)
class _Line:
    pos: tuple[int, int]  # (file rank, index): a parent file's lines sort before its subagent's
    number: int
    obj: dict[str, Any]
    role: str | None = None  # "user"/"assistant" when the line is a message of a prompt
    text: str = ""  # its blocks, rendered
    call: str | None = None  # the call an assistant line belongs to
    tool_ids: list[str] = field(default_factory=list)


class _Index:
    """Lines of a transcript (and of its parent session file, once loaded) by uuid."""

    def __init__(self) -> None:
        self.by_uuid: dict[str, _Line] = {}
        self.calls: dict[str, list[_Line]] = {}  # in order of each call's first line
        self.results: dict[str, list[_Line]] = {}  # tool_use id -> user lines answering it
        self.skipped: list[SkippedLine] = []
        self._bodies: dict[tuple[tuple[int, int], ...], str] = {}

    def add(self, path: str, objects: Iterable[tuple[int, dict]], rank: int) -> None:
        for index, (number, obj) in enumerate(objects):
            if not isinstance(obj, dict):
                self.skipped.append(SkippedLine(number, "expected a JSON object", path))
                continue
            line = _Line((rank, index), number, obj)
            uuid = obj.get("uuid")
            twin = self.by_uuid.get(uuid) if isinstance(uuid, str) else None
            if twin is not None and twin.pos[0] == rank:  # a line written twice must not count twice
                self.skipped.append(SkippedLine(number, f"repeats the uuid of line {twin.number}", path))
                continue
            problem = self._classify(line)
            if problem:
                self.skipped.append(SkippedLine(number, problem, path))
            if isinstance(uuid, str):
                self.by_uuid.setdefault(uuid, line)

    def _classify(self, line: _Line) -> str | None:
        """Fill in the line's message fields; a reason when it cannot be used."""
        obj, kind = line.obj, line.obj.get("type")
        if not isinstance(kind, str):
            return "a Claude Code line needs a string 'type'"
        if kind in IGNORED_TYPES:
            return None
        if kind not in _MESSAGE_TYPES:
            return f"unexpected Claude Code line type {kind!r}"
        msg, call = obj.get("message"), None
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), (str, list)):
            return f"a {kind} line needs 'message.content' (a string or a list of blocks)"
        if kind == "assistant":
            if msg.get("model") == "<synthetic>":
                return None  # Claude Code's own note, never an API call or sent
            call = obj.get("requestId") or msg.get("id")
            if not isinstance(call, str):
                return "an assistant line needs a 'requestId' (or 'message.id') to tell its API call"
        try:
            line.text = ar.render_content(msg["content"])
        except RenderError as e:
            return f"cannot render the {kind} message: {e}"
        line.role = kind
        blocks = [b for b in msg["content"] if isinstance(b, dict)] if isinstance(msg["content"], list) else []
        if kind == "assistant":
            line.call = call
            line.tool_ids = [b["id"] for b in blocks if b.get("type") == "tool_use" and isinstance(b.get("id"), str)]
            self.calls.setdefault(call, []).append(line)
        for b in blocks:
            if b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str):
                self.results.setdefault(b["tool_use_id"], []).append(line)
        return None

    def chain(self, first: _Line) -> list[_Line]:
        """Lines from ``first``'s parent back to the root (any type), newest first."""
        out: list[_Line] = []
        seen: set[str] = set()
        uuid = first.obj.get("parentUuid")
        while isinstance(uuid, str) and uuid not in seen and uuid in self.by_uuid:
            seen.add(uuid)  # a cycle in bad data ends the walk
            out.append(self.by_uuid[uuid])
            uuid = out[-1].obj.get("parentUuid")
        return out

    def missing_parents(self) -> bool:
        """Whether some line's parent is not indexed (a subagent's link into its parent file)."""
        parents = (ln.obj.get("parentUuid") for ln in self.by_uuid.values())
        return any(isinstance(p, str) and p not in self.by_uuid for p in parents)

    def prompt_lines(self, call: str) -> list[_Line]:
        """The message lines a call's prompt carries, in file order (see the module docstring)."""
        first = self.calls[call][0]
        picked = {ln.pos: ln for ln in self.chain(first) if ln.role}
        for key in {ln.call for ln in picked.values() if ln.call}:
            picked.update((ln.pos, ln) for ln in self.calls[key] if ln.pos < first.pos)
        tool_ids = [t for ln in list(picked.values()) for t in ln.tool_ids]
        for t in tool_ids:
            picked.update((ln.pos, ln) for ln in self.results.get(t, ()) if ln.pos < first.pos)
        return [picked[p] for p in sorted(picked)]

    def body(self, lines: list[_Line]) -> str:
        """One message body; memoised, so every call carries the same string object."""
        key = tuple(ln.pos for ln in lines)
        text = self._bodies.get(key)
        if text is None:
            text = self._bodies[key] = "".join(ln.text for ln in lines) + END
        return text

    def message_segments(self, call: str) -> list[str]:
        """Header and body segments of a call's messages, then the generation prompt."""
        messages: list[tuple[str, list[_Line]]] = []
        of_call: dict[str, list[_Line]] = {}
        for ln in self.prompt_lines(call):
            if ln.role == "assistant" and ln.call in of_call:
                of_call[ln.call].append(ln)  # a later block of a call already placed
            elif ln.role == "user" and messages and messages[-1][0] == "user":
                messages[-1][1].append(ln)
            else:
                messages.append((ln.role, [ln]))  # type: ignore[arg-type]
                if ln.role == "assistant":
                    of_call[ln.call] = messages[-1][1]  # type: ignore[index]
        segments: list[str] = []
        for role, lines in messages:
            segments += [ar.message_header(role), self.body(lines)]
        segments.append(ar.GENERATION_PROMPT)
        return segments


def _usage(lines: list[_Line]) -> dict[str, Any] | None:
    usages = [u for ln in lines if isinstance(u := ln.obj["message"].get("usage"), dict)]
    return usages[-1] if usages else None  # the latest streaming snapshot


def _billed(lines: list[_Line]) -> BilledUsage | None:
    if (u := _usage(lines)) is None:
        return None
    keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    vals = [u.get(k, 0) if k != "input_tokens" else u.get(k) for k in keys]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in vals):
        return None
    return BilledUsage(prompt_tokens=sum(vals), cached_tokens=vals[1], cache_write_tokens=vals[2])


def _cache_ttl(lines: list[_Line]) -> str | None:
    split = (_usage(lines) or {}).get("cache_creation")
    if isinstance(split, dict):
        for ttl in ("1h", "5m"):
            n = split.get(f"ephemeral_{ttl}_input_tokens")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                return ttl
    return None


def _output_tokens(lines: list[_Line]) -> int | None:
    counts = [n for ln in lines if isinstance(u := ln.obj["message"].get("usage"), dict)
              if isinstance(n := u.get("output_tokens"), int) and not isinstance(n, bool) and n >= 0]
    return max(counts) if counts else None


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        return None


def _model(line: _Line) -> str | None:
    model = line.obj["message"].get("model")
    return model if isinstance(model, str) else None


def _prefix_tokens(index: _Index, rank: int) -> int:
    """``N`` inferred from the first call (of the file of ``rank``) that has usage."""
    for call, lines in index.calls.items():
        if lines[0].pos[0] != rank or (billed := _billed(lines)) is None:
            continue
        if rank > 0 and any(ln.pos[0] < rank for ln in index.prompt_lines(call)):
            return _prefix_tokens(index, rank - 1)  # it resends the parent conversation
        encode = load_encoder(tokenizer_for_model(_model(lines[0])))
        visible = sum(len(encode(s)) for s in index.message_segments(call))
        return max(0, billed.prompt_tokens - visible)
    return 0


def _session(index: _Index, first: _Line, path: str) -> str:
    obj = first.obj
    sid = obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else Path(path).stem
    if obj.get("isSidechain") is not True:
        return sid
    if Path(path).parent.name == "subagents":
        return f"{sid}/{Path(path).stem}"
    if isinstance(obj.get("agentId"), str):
        return f"{sid}/agent-{obj['agentId']}"
    root = (index.chain(first) or [first])[-1].obj.get("uuid")
    return f"{sid}/sidechain/{root}"


def _load_parent(index: _Index, path: str) -> None:
    """Index ``<session>.jsonl`` for a subagent file whose roots point into it."""
    p = Path(path)
    if p.parent.name != "subagents" or not p.parent.parent.name or not index.missing_parents():
        return
    parent = p.parent.parent.with_suffix(".jsonl")
    if not parent.is_file():
        return
    objects: list[tuple[int, dict]] = []
    with parent.open(encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            try:
                objects.append((number, json.loads(text)))
            except ValueError:
                continue  # that file reports its own bad lines when it is read
    kept = len(index.skipped)
    index.add(str(parent), objects, rank=0)
    del index.skipped[kept:]


def read_records(
    path: str, objects: Iterable[tuple[int, dict]], options: ReaderOptions
) -> Iterator[TraceRecord | SkippedLine]:
    """Yield one record per API call of one transcript file, and its skipped lines, in line order.

    Args:
        path: the file (names subagent files and finds their parent session file).
        objects: ``(line number, JSON object)`` for every valid JSON line of the file.
        options: ``assume_prefix_tokens`` overrides the inferred prefix size.

    Raises:
        ConfigError: ``assume_prefix_tokens`` is negative.
    """
    if options.assume_prefix_tokens is not None and options.assume_prefix_tokens < 0:
        raise ConfigError(f"--assume-prefix-tokens must be >= 0, got {options.assume_prefix_tokens}")
    index = _Index()
    index.add(path, objects, rank=1)
    _load_parent(index, path)
    n = options.assume_prefix_tokens if options.assume_prefix_tokens is not None else _prefix_tokens(index, 1)
    prefix: list[Segment] = [pseudo_tokens(PREFIX_KEY, n)] if n else []
    out: list[TraceRecord | SkippedLine] = list(index.skipped)
    ttls: dict[str, str] = {}  # session -> the TTL its last cache write used
    for call, lines in index.calls.items():
        if lines[0].pos[0] != 1:
            continue  # a parent file's call, loaded only for its messages
        first = lines[0]
        session = _session(index, first, path)
        if ttl := _cache_ttl(lines) or ttls.get(session):
            ttls[session] = ttl
        out.append(TraceRecord(
            line=first.number, request_id=call, session_id=session, cache_ttl=ttl,
            arrival=_epoch(first.obj.get("timestamp")), model=_model(first),
            segments=prefix + index.message_segments(call), output_text=index.body(lines),
            output_length=_output_tokens(lines), billed=_billed(lines), path=path,
        ))
    out.sort(key=lambda item: item.line)
    yield from out
