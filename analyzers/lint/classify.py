"""Why did two requests that should share a prefix stop sharing it?

The cross-request edit classifier, shared by ``kvcache lint`` (trace inputs)
and the replay analyzers. Given two requests that should share a prefix (the
previous turn of the same session, or a request of the same org), it finds the
first divergent token and names the edit.

Definitions (prompts are token lists; ``prev`` is the earlier request):

* **first divergent token** ``d``: the index, in the later prompt, of the first
  token whose cached state the later request cannot reuse: the first token that
  differs from ``prev``'s prompt, or earlier when a parameter keys the cache (a
  model switch: 0; see ``classify_kinds.py`` for the others); 0 for a TTL gap.
* **append-only**: ``d`` is at or past the end of ``prev``'s prompt (its final
  generation prompt ``<|assistant|>\n`` excepted: the reply replaces it), and
  no parameter changed. Such pairs are not reported (nor is a TTL gap without
  a provider).
* **tokens_recomputed**: the tokens of the later prompt at or after ``d`` that
  repeat content of ``prev``'s prompt after ``d``, as aligned by
  ``classify_diff.align`` (whole segments first, then tokens inside a replaced
  run: common prefix and suffix, and ``difflib`` between them up to 2,000
  tokens a side). New content and content the edit removed are not counted:
  it is the work a prefix cache would have saved without the edit.

Heuristics for each :class:`EditKind` are in ``classify_kinds.py`` (structure
and parameters) and ``classify_text.py`` (timestamps, ids, whitespace, JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class EditKind(str, Enum):
    """The edit that broke the shared prefix (or ``APPEND_ONLY``: none did)."""

    APPEND_ONLY = "append-only"
    TIMESTAMP_DRIFT = "timestamp-drift"
    RANDOM_ID = "random-id"
    REORDERED_TOOLS = "reordered-tools"
    JSON_KEY_ORDER = "json-key-order"
    WHITESPACE_ONLY = "whitespace-only"
    PER_USER_DATA = "per-user-data"
    TOOL_SET_CHANGE = "tool-set-change"
    MODEL_SWITCH = "model-switch"
    REASONING_PARAMS = "reasoning-params"
    TOOL_CHOICE_OR_IMAGES = "tool-choice-or-images"
    HISTORY_REWRITTEN = "history-rewritten"
    HISTORY_TRUNCATED = "history-truncated"
    REASONING_STRIPPED = "reasoning-stripped"
    TTL_GAP = "ttl-gap"
    OTHER = "other"


@dataclass(slots=True)
class RequestView:
    """What the classifier needs of one request of a trace.

    Attributes:
        segments: the rendered prompt, one string (or token tuple) per template
            segment, as the trace readers produce them.
        segment_tokens: token ids of each segment (same length as ``segments``).
        tools: the request's tools as given (list of dicts), or ``None``.
        params: request parameters that key the cache besides the prompt
            (``thinking``, ``reasoning_effort``, ``tool_choice``, images ...).
    """

    request_id: str
    path: str
    line: int
    session_id: str | None
    org: str | None
    arrival: float | None
    model: str | None
    segments: list[Any]
    segment_tokens: list[list[int]]
    tools: list[Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EditClassification:
    """The verdict on one pair.

    Attributes:
        kind: the main edit; ``others`` lists further edits found in the same pair.
        first_divergent_token: index of the first prompt token that differs
            (``None`` for ``APPEND_ONLY``).
        first_divergent_segment: index of the segment holding it.
        tokens_recomputed: prompt tokens of the later request from the divergence
            on that it shares with the earlier one's prompt in content but must
            recompute (the cost of the edit).
        detail: one line for people (what changed, e.g. the two timestamps).
    """

    kind: EditKind
    first_divergent_token: int | None
    first_divergent_segment: int | None
    tokens_recomputed: int
    detail: str = ""
    others: list[EditKind] = field(default_factory=list)


@dataclass(slots=True)
class RequestPair:
    """Two requests that should share a prefix, and why they do not.

    ``relation`` is ``session`` (consecutive turns) or ``org`` (two sessions of
    the same org whose system prefix differs).
    """

    prev: RequestView
    cur: RequestView
    relation: str
    classification: EditClassification


def classify_pair(prev: RequestView, cur: RequestView, relation: str = "session",
                  ttl: float | None = None) -> EditClassification:
    """Classify the edit from ``prev`` to ``cur``.

    Args:
        prev, cur: the earlier and the later request.
        relation: ``session`` (consecutive turns) or ``org`` (two sessions of an
            org, compared on their system/tools prefix; a text edit there that
            is not a timestamp, id, whitespace or JSON change and changes at
            most 30% of the characters of both texts is ``PER_USER_DATA``).
        ttl: the provider's cache TTL in seconds; a longer gap between the
            arrivals is ``TTL_GAP`` (``None``: entries never expire).

    Returns:
        The classification; ``APPEND_ONLY`` (with ``first_divergent_token`` of
        ``None`` and nothing recomputed) when ``cur`` loses none of ``prev``'s cache.
    """
    from kvcache.analyzers.lint.classify_kinds import classify_views

    return classify_views(prev, cur, relation, ttl)


def trace_pairs(path: str, ctx: Any, text: str | None = None) -> Iterator[RequestPair]:
    """Classified pairs of a trace file (or of JSONL ``text``), in arrival order.

    Reads any trace ``kvcache replay`` reads, one request at a time; memory is
    bounded by the sessions in flight (see ``classify_views.py``). Yields:

    * ``session`` pairs: each request against the previous request of its
      session, when it loses cache (not append-only, or past the TTL of
      ``ctx.provider``);
    * ``org`` pairs: the first request of each session (every request, when the
      trace has no sessions) against the reference prefix of its org and model
      (the most common system/tools prefix seen at session starts so far), when
      their system/tools text differs. The classification then covers the
      prefix only.

    Args:
        path: the trace file or folder (``text``: the name to report).
        ctx: a ``LintContext`` (``provider`` sets the TTL; ``model`` stands in
            for records without one).
        text: JSONL content to read instead of ``path``; it is written to a
            temporary file that is removed afterwards.

    Raises:
        TraceError: the trace cannot be read (``path:line`` and what was expected).
    """
    from kvcache.analyzers.lint.classify_views import OrgPrefixes, Sessions, open_trace, to_view, ttl_seconds

    provider, default_model = getattr(ctx, "provider", None), getattr(ctx, "model", None)
    sessions, orgs = Sessions(), OrgPrefixes()
    with open_trace(path, text) as stream:
        for rec in stream.ordered_records():
            view = to_view(rec, stream, path, default_model)
            if view is None:
                continue
            if text is not None:
                view.path = path
            prev, first = sessions.swap(view) if view.session_id is not None else (None, True)
            if prev is not None:
                cls = classify_pair(prev, view, "session", ttl_seconds(provider, view))
                if cls.kind is not EditKind.APPEND_ONLY:
                    yield RequestPair(prev, view, "session", cls)
            if first and (ref := orgs.reference(view)) is not None:
                earlier, earlier_prefix, prefix = ref
                cls = classify_pair(earlier_prefix, prefix, "org")
                if cls.kind is not EditKind.APPEND_ONLY:
                    yield RequestPair(earlier, view, "org", cls)
