"""Volatile-content detectors on prompt text, shared by the KV1xx rules.

Each ``find_*`` function scans a string (a prompt file, or one decoded JSON
string of a request body) and yields ``(start, end, what)`` spans; per-user
data and command output are found by ``static_env.py``. They favour
precision over recall: a static prompt must stay silent, so a version number
(``v1.2.3``), a ratio (``3:1``), a section (``2.1``), a port
(``localhost:8080``), a line reference (``app.py:12:34``) or a schedule
(``standup at 10:30``) is not a timestamp, and a documented example UUID is not
a random id.

Template variables (``{now}``, ``{{ user.email }}``) are judged by their
names with :func:`name_is`, which the Python checks reuse for interpolated
names (``f"{user.email}"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from kvcache.analyzers.lint.document import PLACEHOLDER_RE

Span = tuple[int, int, str]

# --------------------------------------------------------------------- names
_TIME_LEAF = re.compile(
    r"^(?:now|time|datetime|date_?time|timestamp|ts|clock|utc_?now|time_?now|now_(?:iso|str|utc|local)"
    r"|(?:current|curr|local|server|system|request)_(?:time|datetime|date_?time|timestamp|ts)"
    r"|(?:time|datetime|timestamp)_(?:now|str|iso|utc|local))$")
_RANDOM_LEAF = re.compile(
    r"^(?:request_?id|req_?id|trace_?id|span_?id|correlation_?id|run_?id|invocation_?id|nonce|uuid4?|guid"
    r"|random(?:_\w+)?|rand|cache_?buster|idempotency_?key|message_?id|msg_?id)$")
_USER_LEAF = re.compile(
    r"^(?:user|user_?name|user_?id|user_?email|user_?handle|email|email_?address|first_?name|last_?name"
    r"|full_?name|display_?name|given_?name|phone(?:_?number)?|customer|customer_(?:id|name|email)|member_?id"
    r"|session_?id|conversation_?id|thread_?id|chat_?id|cwd|home_?dir|working_?dir(?:ectory)?"
    r"|workspace_?(?:dir|path)|session_?(?:dir|path)|user_?(?:dir|home|path))$")
_USER_OBJECT = frozenset({"user", "current_user", "customer", "member", "profile", "viewer", "me", "session",
                          "conversation", "thread"})
_ENV_PART = re.compile(
    r"^(?:git_(?:status|diff|log|branch|info)|recent_commits|(?:file|files|directory|dir|project|repo)_?tree"
    r"|repo_map|(?:file|dir|directory|cwd|folder)_?listing|listing|ls(?:_output)?|file_?list|open_(?:files|tabs)"
    r"|(?:recent|workspace|project)_files|todos?|todo_?list|memory|memories|memory_(?:dump|file|content)"
    r"|scratchpad|(?:env|environment|system)_info|(?:lsp_)?diagnostics)$")


def name_is(kind: str, dotted: str, *, last_only: bool = False) -> bool:
    """Whether a template/interpolated variable name marks ``kind`` content.

    ``kind`` is ``time``, ``random``, ``user`` or ``env``. ``dotted`` is the
    name as written (``user.email``, ``self.request_id``); a leading ``self``
    or ``cls`` is ignored. ``env`` matches any part of a template variable
    (``{{ memory.summary }}``), or only the last with ``last_only`` (Python:
    ``agent.memory.steps`` is not the memory rendered).
    """
    parts = [p.lower().lstrip("_") for p in dotted.split(".") if p]
    if parts and parts[0] in ("self", "cls", "ctx", "context"):
        parts = parts[1:]
    if not parts:
        return False
    if kind == "time":
        return bool(_TIME_LEAF.match(parts[-1]))
    if kind == "random":
        return bool(_RANDOM_LEAF.match(parts[-1]))
    if kind == "user":
        return bool(_USER_LEAF.match(parts[-1])) or any(p in _USER_OBJECT for p in parts[:-1])
    if kind == "env":
        return any(_ENV_PART.match(p) for p in (parts[-1:] if last_only else parts))
    raise ValueError(f"unknown kind {kind!r}")


_STRFTIME_TIME = re.compile(r"%-?[HIMSpXcTRrsfkl]")
_STRFTIME_DATE = re.compile(r"%-?[YmdyBbAaejDFGx]")
_COARSE_CALL = re.compile(r"\.date\(\)|\|\s*date\b|toDateString|toLocaleDateString|\.slice\(0,\s*10\)")


def date_only_format(text: str) -> bool:
    """True when ``text`` holds a strftime format with date fields and no time fields."""
    return bool(_STRFTIME_DATE.search(text)) and not _STRFTIME_TIME.search(text)


# --------------------------------------------------------------- placeholders
_JINJA_EXTRA = re.compile(
    r"\{%-?\s*now\b[^\n]*?%\}"  # jinja2-time: {% now 'utc', '%H:%M' %}
    r"|\{\{[^{}]*\|\s*random\b[^{}]*\}\}"  # {{ ids | random }}
    r"|\$\{[^{}]*?(?:new\s+Date\s*\(\s*\)|Date\.now\s*\(|Math\.random\s*\(|randomUUID\s*\(|uuid\w*\s*\()[^{}]*\}")


def find_placeholders(text: str, kind: str, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """Template variables of ``kind`` (see :func:`name_is`) in ``text[start:end]``."""
    end = len(text) if end is None else end
    for m in PLACEHOLDER_RE.finditer(text, start, end):
        name, raw = m.group(1) or m.group(2), m.group(0)
        if name_is(kind, name) and not (kind == "time" and (date_only_format(raw) or _COARSE_CALL.search(raw))):
            yield m.start(), m.end(), f"the template variable `{raw}`"
    for m in _JINJA_EXTRA.finditer(text, start, end):
        raw = m.group(0)
        is_time = "now" in raw[:8] or "Date" in raw
        if (kind == "time" and is_time and not (date_only_format(raw) or _COARSE_CALL.search(raw))) or (
                kind == "random" and not is_time):
            yield m.start(), m.end(), f"the template expression `{raw}`"


# --------------------------------------------------------------- timestamps
_EXAMPLE_CONTEXT = re.compile(r"(?i)(?:e\.g\.|\bexample|\bsuch as|\blike|\bformat|\bsha\d*|\bmd5|\bdigest|\bchecksum"
                              r"|\bcommit|\bintegrity|\bhash)(?:\s+(?:is|was|of|id|hash|sha))?\W{0,12}$")
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_DATE = (rf"(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}"
         rf"|{_MON}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MON},?\s+\d{{4}})")
_HHMM = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?(?:\s?(?:[AaPp]\.?[Mm]\.?|UTC|GMT|Z\b|[+-]\d\d:?\d\d))?"
_TIME_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\b{_DATE}(?:T|,?\s+(?:at\s+)?){_HHMM}", re.I), "a date and time"),
    # Seconds make it a reading of the clock; HH:00:00 on the hour is an example ("12:00:00"), not "now".
    (re.compile(r"(?<![\w.:/-])(?!(?:[01]?\d|2[0-3]):00:00\b)(?:[01]?\d|2[0-3]):[0-5]\d:[0-5]\d(?:[.,]\d+)?(?![\d:])"),
     "a clock time"),
    (re.compile(rf"(?i)(?:\b(?:(?:current|local|server|system)\s+(?:date\s*(?:and|&|/)\s*)?time(?:stamp)?|time\s+now"
                rf"|the\s+time\s+is|timestamp|as\s+of|(?:generated|rendered|updated|sent)\s+(?:at|on)"
                rf"|last\s+(?:updated|modified|synced))\b|\bnow\s*[:=])[^\n\d]{{0,24}}"
                rf"(?:(?<![\w.:/-]){_HHMM}(?![\d:])|\d{{10}}(?:\d{{3}})?\b)"),
     "a labelled time"),
    (re.compile(r"(?i)\b(?:timestamp|epoch|unix\s+time)\b\W{0,3}\d{10}(?:\d{3})?\b"), "a Unix timestamp"),
    (re.compile(r"(?i)\b(?:current\s+(?:date\s*(?:and|&|/)\s*)?time|time\s+now|the\s+time\s+is|timestamp)\b[^\n{}]{0,12}"
                r"(?:\{\{[^{}\n]*\}\}|\{[^{}\n]*\}|\$\{[^{}\n]*\})"), "a time label with a template variable"),
)


_MIDNIGHT = re.compile(r"(?<![\d:])00:00(?::00(?:\.0+)?)?(?!:?\d)")


def find_timestamps(text: str, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """Clock times, date-times and labelled times; a bare date (``2025-01-31``) is not one."""
    end = len(text) if end is None else end
    for pattern, what in _TIME_RES:
        for m in pattern.finditer(text, start, end):
            if what.startswith("a time label") and (date_only_format(m.group(0)) or _COARSE_CALL.search(m.group(0))):
                continue
            labelled = what.startswith(("a labelled", "a time label"))
            if not labelled and (_MIDNIGHT.search(m.group(0))
                                 or _EXAMPLE_CONTEXT.search(text, max(start, m.start() - 40), m.start())):
                continue  # "2025-01-01T00:00:00Z" is a date; "e.g. 2025-01-31T14:32:05Z" documents a format
            yield m.start(), m.end(), f"{what} `{m.group(0).strip()}`"


# --------------------------------------------------------------- random ids
_NIL = re.compile(r"^(?:0{8}-0{4}-0{4}-0{4}-0{12}|123e4567-e89b-12d3-a456-426614174000)$", re.I)
_ID_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "a UUID"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{32,}\b|\b(?=[0-9A-F]*[A-F])(?=[0-9A-F]*\d)[0-9A-F]{32,}\b"),
     "a long hex id"),
    (re.compile(r"(?i)\b(?:request|req|trace|span|correlation|run|invocation|idempotency)[ _-]?(?:id|key)\b\s*[:=]\s*"
                r"[\"'`]?(?=[\w.:-]*\d)[A-Za-z0-9][\w.:-]{5,}"), "a labelled request id"),
)


def find_random_ids(text: str, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """UUIDs, 32+ digit hex ids and labelled request/trace ids, except documented examples and hashes."""
    end = len(text) if end is None else end
    for pattern, what in _ID_RES:
        for m in pattern.finditer(text, start, end):
            if _NIL.match(m.group(0)) or _EXAMPLE_CONTEXT.search(text, max(start, m.start() - 40), m.start()):
                continue
            yield m.start(), m.end(), f"{what} `{m.group(0)}`"


# --------------------------------------------------------------- helpers
_USER_TURN = re.compile(r"(?m)^(?:<\|(?:user|human)\|>|<\|im_start\|>\s*user|<\|start_header_id\|>\s*user"
                        r"|(?:Human|HUMAN|User|USER)\s*:|#{1,4}\s*(?:User|Human)\b)")


def prefix_end(text: str, start: int = 0) -> int:
    """Where the prefix of a text prompt ends: at the first user turn marker, else the end."""
    m = _USER_TURN.search(text, start)
    return m.start() if m else len(text)


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans joined (the first one's description kept), in order."""
    out: list[Span] = []
    for s, e, what in sorted(spans, key=lambda x: (x[0], -x[1])):
        if out and s < out[-1][1]:
            ps, pe, pwhat = out[-1]
            out[-1] = (ps, max(pe, e), pwhat)
        else:
            out.append((s, e, what))
    return out
