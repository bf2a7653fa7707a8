"""SWE-agent trajectories (``*.traj``): one record per model query, no bills.

A ``.traj`` is one JSON object. ``history`` lists every message of the run
(``role`` system/user/assistant/tool; ``content`` a string or a list of
parts; ``tool_calls`` and ``tool_call_ids`` in function-calling runs);
``trajectory`` lists one step per query. The rules:

* **Queries.** Every assistant message of the main agent (the ``agent`` of the
  first history entry; other agents keep histories of their own, as SWE-agent
  filters them) is the reply of one query.
* **Prompt.** What was sent: step ``k`` records the messages after its
  observation (``trajectory[k].messages``), which query ``k+1`` sends, when
  there are as many steps as replies and the count matches the history before
  the reply; the first query, and runs without such steps, use the history
  before the reply. SWE-agent's history processors edit the recorded messages
  (``last_n_observations`` replaces old outputs by ``Old environment output:
  (N lines omitted)``, which breaks the cache there, as on the provider). A
  leading system message is the template's system segment; demonstrations
  (``is_demo``) are user messages, as SWE-agent sends them;
  ``tool_call_ids[0]`` names a tool result.
* **Reply.** ``output_segments`` is the assistant message's body, as the next
  query's prompt carries it.
* **No usage** (``billed=None``); ``info.model_stats.tokens_sent`` is a run
  total, not per query. ``arrival`` is ``None`` (file order): ``execution_time``
  times the tools, not the model. ``model`` is
  ``replay_config.agent.model.name`` unless it names one of SWE-agent's stand-in
  models (``replay``, ``human``...).
* ``session_id`` is the file stem; ``request_id`` ``{stem}/{n}``, n from 1.
* A bad history entry or step is a :class:`SkippedLine` named ``history[i]`` or
  ``trajectory[k]`` (at the document's line 1); a bad entry is left out of
  prompts, a bad step falls back to the history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kvcache.engine.traces.records import ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.render import GENERATION_PROMPT, RenderError, render_segments

NAME = "swe-agent"
FILE_LEVEL = True
ROLES = frozenset({"system", "user", "assistant", "tool"})
STAND_IN_MODELS = frozenset({"replay", "human", "human_thought", "instant_empty_submit"})


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a file's first object is a SWE-agent trajectory."""
    return isinstance(obj.get("history"), list) and isinstance(obj.get("trajectory"), list)


def _segments(m: Any, where: str, first: bool) -> list[str]:
    """One history entry's segments: header and body, or the system segment when it
    opens the prompt (``tool_call_ids[0]`` names a tool result).

    Raises:
        RenderError: the entry (named ``where``) has a shape the template does not understand.
    """
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise RenderError(f"{where}: expected a message with a role of {', '.join(sorted(ROLES))}")
    ids = m.get("tool_call_ids")
    call_id = m.get("tool_call_id") or (ids[0] if isinstance(ids, list) and ids else None)
    msg = {"role": m["role"], "content": m.get("content"), "tool_calls": m.get("tool_calls"),
           "tool_call_id": call_id if isinstance(call_id, str) else None}
    try:
        if first and msg["role"] == "system":
            return render_segments(None, msg["content"] or "", [])[:-1]
        return render_segments(None, None, [msg])[:-1]  # the header and body it has in any prompt
    except RenderError as e:
        raise RenderError(f"{where}: {str(e).removeprefix('messages[0]: ')}") from None


def _render(messages: list[Any], where: str) -> list[str]:
    """Template segments of messages (see :func:`_segments`).

    Raises:
        RenderError: a message, named ``{where}[i]``, cannot be rendered.
    """
    return [seg for i, m in enumerate(messages) for seg in _segments(m, f"{where}[{i}]", i == 0)]


def _model(doc: dict[str, Any]) -> str | None:
    config = doc.get("replay_config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return None
    agent = config.get("agent") if isinstance(config, dict) else None
    model = agent.get("model") if isinstance(agent, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name and name not in STAND_IN_MODELS else None


def _read(path: str, session: str, line: int, doc: Any) -> Iterator[TraceRecord | SkippedLine]:
    if not isinstance(doc, dict) or not isinstance(doc.get("history"), list):
        yield SkippedLine(line, "expected a SWE-agent trajectory object with a 'history' list", path)
        return
    history: list[Any] = doc["history"]
    main = history[0].get("agent") if history and isinstance(history[0], dict) else None
    kept: list[dict[str, Any]] = []  # usable messages of the main agent
    bodies: list[str] = []  # each kept message's rendered body
    for i, m in enumerate(history):
        if isinstance(m, dict) and m.get("agent", main) != main:
            continue  # another agent's conversation (SWE-agent filters them too)
        try:  # rendered on its own, to check it and to get its body
            body = _segments(m, f"history[{i}]", first=not kept)[-1]
        except RenderError as e:
            yield SkippedLine(line, str(e), path)
            continue
        kept.append(m)
        bodies.append(body)
    replies = [k for k, m in enumerate(kept) if m["role"] == "assistant"]
    steps = doc.get("trajectory")
    # Step k records the messages after its observation: what query k+1 sends.
    use_steps = isinstance(steps, list) and len(steps) == len(replies)
    model = _model(doc)
    for n, k in enumerate(replies, start=1):
        prompt: list[str] | None = None
        sent = steps[n - 2].get("messages") if use_steps and n > 1 and isinstance(steps[n - 2], dict) else None  # type: ignore[index]
        if isinstance(sent, list) and len(sent) == k:
            try:
                prompt = _render(sent, f"trajectory[{n - 2}].messages")
            except RenderError as e:
                yield SkippedLine(line, f"{e}; using the history instead", path)
        if prompt is None:
            prompt = _render(kept[:k], "history")  # every entry rendered on its own above
        yield TraceRecord(
            line=line, request_id=f"{session}/{n}", session_id=session, model=model,
            segments=[*prompt, GENERATION_PROMPT], output_segments=[bodies[k]], billed=None, path=path,
        )


def read_records(
    path: str, objects: Iterable[tuple[int, dict]], options: ReaderOptions
) -> Iterator[TraceRecord | SkippedLine]:
    """One record per model query of each trajectory object (see the module docstring).

    ``options`` is unused: the trajectory holds the whole prompt.
    """
    stem = Path(path).stem
    for count, (line, obj) in enumerate(objects):
        yield from _read(path, stem if count == 0 else f"{stem}/{line}", line, obj)
