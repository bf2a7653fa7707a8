"""Why did two consecutive requests stop sharing their prefix?

The cross-request edit classifier, shared by ``kvcache lint`` (trace inputs)
and the replay analyzers. Given two requests that should share a prefix (the
previous turn of the same session, or a request of the same org), it finds the
first divergent token and names the edit.

NOTE: the interface below is fixed; the classification logic and
``trace_pairs`` are being written (see the lint issue).
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


def trace_pairs(path: str, ctx: Any, text: str | None = None) -> Iterator[RequestPair]:
    """Classified pairs of a trace file (or of JSONL ``text``)."""
    raise NotImplementedError("trace pair classification is being written")
