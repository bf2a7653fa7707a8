"""Per-user data and the state of the user's machine in prompt text (KV103, KV104).

Like ``static_text.py``: each ``find_*`` function yields ``(start, end, what)``
spans of one string and prefers precision. A label followed by prose or a
column type (``User name: the name shown``, ``user_id: INTEGER``) is not user
data, a generic home (``/home/user``, ``C:\\Users\\Public``) is not a
person's, a role address (``support@``) or an ``example.com`` address is not
personal, and a command-output block needs two recognisable lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from kvcache.analyzers.lint.static_text import Span

# --------------------------------------------------------------- per-user data
_GENERIC_USERS = ("user|users|ubuntu|runner|root|admin|app|node|ec2-user|vscode|codespace|jovyan|username|me|you"
                  "|name|shared|public|default|guest|runneradmin|work|project|dev|USER|USERNAME|Shared|Public|Default")
_USER_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?im)^[ \t>*#-]*(?:user(?:'s)?[ \t]?(?:name|email|id|handle)|logged[ -]in\s+as|current[ \t]+user"
                r"|customer[ \t]?(?:name|id|email)|(?:session|conversation|thread|chat)[ \t]?id)[ \t]*[:=][ \t]*(\S[^\n]*)"),
     "a labelled user or session field"),
    (re.compile(rf"(?<![\w/])(?:/home/|/Users/|[A-Za-z]:\\\\?Users\\\\?)(?!(?:{_GENERIC_USERS})(?![\w-]))[\w.-]*\w"),
     "a per-user home path"),
    (re.compile(r"(?<![\w/])(?:/tmp/(?:tmp[\w]{6,}|session[-_]?[\w-]{6,})|/var/folders/\w\w/[\w]+)"),
     "a per-session temp path"),
)
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
_ROLE_LOCAL = re.compile(r"^(?:support|help|helpdesk|info|no-?reply|admin|security|sales|team|contact|hello|privacy"
                         r"|legal|billing|abuse|postmaster|webmaster|feedback|dev|engineering|ops|oncall|it|hr|jobs"
                         r"|careers|press|service|bot|notifications?)$", re.I)
_EXAMPLE_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|test|invalid|localhost|local)$", re.I)


_PROSE = re.compile(r"(?i)^(?:the|a|an|your|their|its|his|her|determined|see|same|not|none|n/a|unknown|optional|required"
                    r"|varchar|char|text|int|integer|bigint|uuid|string|str|number|bool|boolean)\b")


def _not_a_value(value: str) -> bool:
    """A label followed by prose or a type ("User name: the name shown", "user id: INTEGER"), not by data."""
    return len(value.split()) > 5 or bool(_PROSE.match(value))


def find_user_data(text: str, start: int = 0, end: int | None = None, *, emails: bool = False) -> Iterator[Span]:
    """Labelled user/session fields, per-user home paths, temp dirs and (``emails``) personal addresses."""
    end = len(text) if end is None else end
    for pattern, what in _USER_RES:
        for m in pattern.finditer(text, start, end):
            if pattern.groups and _not_a_value(m.group(1)):
                continue
            yield m.start(), m.end(), f"{what} `{m.group(0).strip()[:60]}`"
    if emails:
        for m in _EMAIL.finditer(text, start, end):
            if not (_ROLE_LOCAL.match(m.group(1)) or _EXAMPLE_DOMAIN.search(m.group(2))):
                yield m.start(), m.end(), f"the email address `{m.group(0)}`"


# --------------------------------------------------------------- environment
_GIT_STATUS_LINE = re.compile(
    r"(?m)^(?:On branch \S+|HEAD detached at \S+|Your branch is (?:up to date|ahead|behind|based on)"
    r"|Changes not staged for commit:|Changes to be committed:|Untracked files:|nothing to commit"
    r"|no changes added to commit|gitStatus:)")
# Matched with pattern.match(text, line_start, line_end): anchored at the line start without "^".
_BLOCK_LINES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:\?\?|!!|[ MADRCU][MADRCU ])(?<!  ) [\w./-]+[/.][\w./-]*$"), "`git status --short` output"),
    (re.compile(r"(?=[0-9a-f]{7,12} )(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12} \S.*$"), "`git log --oneline` output"),
    (re.compile(r"[-dl][rwxsStT-]{9}[.@+]?\s+\d+\s+\S+\s+\S+\s+\d+\s+\w{3}\s+\d{1,2}\s+[\d:]{4,5}\s+\S.*$"),
     "an `ls -l` listing"),
)


def find_environment(text: str, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """Blocks of command output: ``git status`` (long or short), ``git log --oneline``, ``ls -l``.

    One matching line is not enough; a block needs two lines (a prompt that
    says "On branch main" once is prose).
    """
    end = len(text) if end is None else end
    hits = [m for m in _GIT_STATUS_LINE.finditer(text, start, end)]
    for a, b in zip(hits, hits[1:]):
        if b.start() - a.start() < 600:
            nl = text.find("\n", b.start(), end)
            yield a.start(), end if nl < 0 else nl, "`git status` output"
            break
    for pattern, what in _BLOCK_LINES:
        run: list[tuple[int, int]] = []
        for line_start, line_end in _lines(text, start, end):
            if pattern.match(text, line_start, line_end):
                run.append((line_start, line_end))
                continue
            if len(run) >= 2:
                yield run[0][0], run[-1][1], what
            run = []
        if len(run) >= 2:
            yield run[0][0], run[-1][1], what


def _lines(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    i = start
    while i < end:
        j = text.find("\n", i, end)
        j = end if j < 0 else j
        yield i, j
        i = j + 1
