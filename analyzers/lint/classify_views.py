"""From a trace to :class:`RequestView` objects, and the state ``trace_pairs`` keeps.

* :func:`open_trace` opens any trace ``kvcache replay`` reads through
  :class:`~kvcache.engine.traces.stream.RequestStream`; JSONL held in memory is
  written to a temporary file (removed afterwards) with the suffix of the path
  it pretends to have, and errors name that path.
* :func:`to_view` tokenizes a record's segments with the stream's tokenizer
  (memoised per segment, as replay does). Token-id traces become one segment.
  Block-hash traces become one segment per full block of stand-in tokens
  (equal ids, equal tokens), so their divergences fall on block boundaries; a
  partial last block is left out (its id names content that grows on the next
  turn, and only full blocks are cached). Their ids are prefix-chained, so no
  block after a divergence can be recognised as repeated: ``tokens_recomputed``
  is 0 for them.
* :class:`Sessions` remembers the latest request of each session, at most
  :data:`MAX_SESSIONS` of them (the least recently active is forgotten).
* :class:`OrgPrefixes` remembers, per (org, model), the system/tools prefixes
  seen at the start of sessions and how often: the most common one (the most
  recent on a tie) is the reference a new session should share.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvcache.analyzers.lint.classify import RequestView
from kvcache.analyzers.lint.classify_layout import layout
from kvcache.engine.errors import TraceError
from kvcache.engine.traces.records import TraceRecord
from kvcache.engine.traces.stream import RequestStream, StreamOptions

MAX_SESSIONS = 100_000
MAX_VARIANTS = 32  # prefixes remembered per (org, model)


@contextmanager
def open_trace(path: str, text: str | None, options: StreamOptions | None = None) -> Iterator[RequestStream]:
    """A stream over ``path``, or over ``text`` as if it were the file ``path``.

    Raises:
        TraceError: the trace cannot be read (naming ``path`` for ``text``).
    """
    if text is None:
        yield RequestStream(path, options or StreamOptions())
        return
    suffix = Path(path).suffix if Path(path).suffix in (".json", ".traj", ".jsonl") else ".jsonl"
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="kvcache-lint-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            yield RequestStream(tmp, options or StreamOptions())
        except TraceError as e:
            if e.path != tmp:
                raise
            raise TraceError(path, e.line, e.message) from None
    finally:
        os.unlink(tmp)


def to_view(rec: TraceRecord, stream: RequestStream, path: str, default_model: str | None = None) -> RequestView | None:
    """The view of one record, or ``None`` for a record that cannot pair with any
    other (no session and no text prefix an org could share)."""
    model = rec.model or default_model
    if rec.segments is not None:
        tok = stream.tokenizer_for(model)
        segments: list[Any] = rec.segments
        tokens = [s if type(s) is tuple else tok.encode(s) for s in segments]
    elif rec.session_id is None:
        return None
    elif rec.prompt_token_ids is not None:
        segments = [tuple(rec.prompt_token_ids)]
        tokens = list(segments)
    else:
        segments = tokens = _block_segments(rec, stream.block_size)
    params = dict(rec.params or {})
    if rec.cache_ttl:
        params["cache_ttl"] = rec.cache_ttl
    return RequestView(
        request_id=rec.request_id, path=rec.path or path, line=rec.line, session_id=rec.session_id, org=rec.org,
        arrival=rec.arrival, model=model, segments=segments, segment_tokens=tokens, tools=rec.tools, params=params,
    )


def _block_segments(rec: TraceRecord, block_size: int) -> list[Any]:
    import xxhash

    full = (rec.input_length or 0) // block_size
    return [(xxhash.xxh32_intdigest(repr((rec.org, h)).encode()),) * block_size for h in (rec.hash_ids or [])[:full]]


def ttl_seconds(provider: str | None, view: RequestView) -> float | None:
    """The provider's cache TTL for a request (its logged ``cache_ttl`` when the
    provider knows it), or ``None``: no provider (a local vLLM never expires entries)."""
    if provider is None:
        return None
    from kvcache.engine.errors import ConfigError
    from kvcache.engine.provider_cache import ProviderRules

    ttl = view.params.get("cache_ttl")
    try:
        return ProviderRules.load(provider, view.model, ttl).ttl_seconds
    except ConfigError:
        try:
            return ProviderRules.load(provider, view.model).ttl_seconds
        except ConfigError:
            return None


class Sessions:
    """The latest request of each session (least recently active forgotten first)."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self.limit = limit
        self._last: OrderedDict[str, RequestView] = OrderedDict()

    def swap(self, view: RequestView) -> tuple[RequestView | None, bool]:
        """Store ``view`` as its session's latest; return the previous one and
        whether the session is new."""
        sid = view.session_id
        assert sid is not None, "only requests with a session are tracked"
        prev = self._last.pop(sid, None)
        self._last[sid] = view
        if len(self._last) > self.limit:
            self._last.popitem(last=False)
        return prev, prev is None


def prefix_view(view: RequestView) -> RequestView | None:
    """The view cut to its system/tools prefix; ``None`` when the prefix holds no text."""
    end = layout(view.segments).prefix_end
    if not any(type(s) is str for s in view.segments[:end]):
        return None
    return RequestView(
        request_id=view.request_id, path=view.path, line=view.line, session_id=view.session_id, org=view.org,
        arrival=view.arrival, model=view.model, segments=view.segments[:end], segment_tokens=view.segment_tokens[:end],
        tools=view.tools, params=view.params,
    )


class OrgPrefixes:
    """Prefix variants seen at session starts, per (org, model), with their counts."""

    def __init__(self) -> None:
        self._orgs: dict[tuple[str, str | None], dict[tuple[str, ...], list[Any]]] = {}
        self._seq = 0

    def reference(self, view: RequestView) -> tuple[RequestView, RequestView, RequestView] | None:
        """Record ``view``'s prefix; return ``(earlier request, its prefix, this prefix)`` when
        the org's reference prefix differs from this one in text, else ``None``."""
        cut = prefix_view(view)
        if cut is None:
            return None
        key = tuple(s for s in cut.segments if type(s) is str)  # pseudo tokens stand for unknown text
        variants = self._orgs.setdefault((view.org or "", view.model), {})
        ref = max(variants.items(), key=lambda kv: (kv[1][0], kv[1][1]), default=None)
        self._seq += 1
        entry = variants.setdefault(key, [0, 0, view, cut])
        entry[0] += 1
        entry[1] = self._seq
        if len(variants) > MAX_VARIANTS:
            del variants[min(variants, key=lambda k: (variants[k][0], variants[k][1]))]
        if ref is None or ref[0] == key:
            return None
        return ref[1][2], ref[1][3], cut
