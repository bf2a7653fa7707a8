"""From a trace file to a stream of engine requests.

Reads lines, detects the format, parses records, checks arrival order, then
tokenizes (memoised per segment) and hashes each record into a
:class:`~kvcache.engine.request.Request`. Everything streams: memory grows with
the distinct text and blocks seen, not with the length of the trace.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvcache.engine.config import DEFAULT_BLOCK_SIZE, HIT_CAPS, HashAlgo, HitCap
from kvcache.engine.errors import ConfigError, TraceError
from kvcache.engine.hashing import BlockHash, hash_token_blocks
from kvcache.engine.request import Request, kv_token_count
from kvcache.engine.traces.detect import FORMATS, HASH_ID_FORMATS, detect_format, line_parser
from kvcache.engine.traces.io import TraceLine, iter_lines, parse_json_object
from kvcache.engine.traces.logs import first_object, is_blank, is_document, is_file_level, log_files, read_log_records
from kvcache.engine.traces.prefix_memo import PrefixHashMemo
from kvcache.engine.traces.records import ReaderOptions, SkippedLine, TraceRecord
from kvcache.engine.traces.tokenizer import TOKENIZERS, SegmentTokenizer, is_registered, pseudo_tokens, tokenizer_for_model


@dataclass(slots=True)
class StreamOptions:
    """How to read a trace.

    Attributes:
        input_format: ``auto`` or one of :data:`FORMATS`.
        block_size: engine block size for token traces.
        trace_block_size: tokens per hash id in block-hash traces (512 if unset).
        hash_algo: ``xxh3_128`` or ``sha256`` (see ``engine/hashing.py``).
        hit_cap: ``vllm`` caps hits at prompt-1 tokens over full blocks; ``none``
            counts every trace block (Mooncake's convention); ``auto`` picks
            ``none`` for block-hash traces and ``vllm`` otherwise.
        batch_output: a batch output/results file whose usage is paired with the
            input lines by ``custom_id`` (OpenAI Batch, Anthropic Message Batches).
        assume_prefix_tokens: prompt tokens an agent log leaves out (Claude Code's
            system prompt and tools); inferred from billed usage when ``None``.
        tokenizer: vocabulary for native records: ``auto`` (by each record's
            model, see ``engine/data/tokenizers.json``), ``cl100k_base``,
            ``o200k_base``, or a path to a Hugging Face ``tokenizer.json``.
        skip_invalid: skip malformed lines (they are counted) instead of failing.
        sort: buffer the trace and sort it by arrival (stable) instead of
            requiring arrivals in file order.
        keep_token_ids: put each request's token ids (prompt, then the recorded
            reply) on the request, for a model that runs them (``--compute``).
            Block-hash traces carry no tokens: each hash id stands for
            ``block_size`` stable stand-in ids drawn from it (see
            :func:`hash_id_tokens`), so equal blocks hold equal tokens.
    """

    input_format: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    trace_block_size: int | None = None
    hash_algo: HashAlgo = "xxh3_128"
    hit_cap: HitCap = "auto"
    tokenizer: str = "auto"
    assume_prefix_tokens: int | None = None
    batch_output: str | None = None
    skip_invalid: bool = False
    sort: bool = False
    keep_token_ids: bool = False

    def __post_init__(self) -> None:
        if self.input_format != "auto" and self.input_format not in FORMATS:
            raise ConfigError(f"unknown input format {self.input_format!r}; choose auto or one of {', '.join(FORMATS)}")
        if self.hit_cap not in HIT_CAPS:
            raise ConfigError(f"unknown hit cap {self.hit_cap!r}; choose one of {', '.join(HIT_CAPS)}")
        if self.tokenizer not in ("auto", *TOKENIZERS) and not self.tokenizer.endswith(".json") and not is_registered(self.tokenizer):
            raise ConfigError(
                f"unknown tokenizer {self.tokenizer!r}; choose auto, {', '.join(TOKENIZERS)} or a path to a tokenizer.json"
            )
        if self.assume_prefix_tokens is not None and self.assume_prefix_tokens < 0:
            raise ConfigError(f"--assume-prefix-tokens must not be negative, got {self.assume_prefix_tokens}")
        if self.trace_block_size is not None and self.trace_block_size < 1:
            raise ConfigError(f"--trace-block-size must be positive, got {self.trace_block_size}")


@dataclass
class RequestStream:
    """Iterate over the requests of one trace file.

    After (or during) iteration, ``format``, ``block_size``, ``skipped`` and
    ``bytes_read`` describe what was read.
    """

    path: str
    options: StreamOptions = field(default_factory=StreamOptions)
    format: str | None = None
    skipped: list[SkippedLine] = field(default_factory=list)
    bytes_read: int = 0
    tokenizers: dict[str, SegmentTokenizer] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    formats_seen: set[str] = field(default_factory=set)
    _prefix_memo: PrefixHashMemo = field(default_factory=PrefixHashMemo)

    def __post_init__(self) -> None:
        self._files: list[str] = []
        if Path(self.path).is_dir() or is_document(self.path):
            # A folder of agent logs (e.g. a whole ~/.claude/projects tree) or one JSON document.
            self._files = log_files(self.path) if Path(self.path).is_dir() else [self.path]
            fmt = self.options.input_format
            if fmt == "auto":
                # Detect from the first file that holds anything (empty ones are passed over).
                probe = next((f for f in self._files if not is_blank(f)), self._files[0])
                fmt = detect_format(first_object(probe, self.options.skip_invalid, self.skipped), probe, 1)
            self.format = fmt
            return
        self._lines: Iterator[TraceLine] = iter_lines(self.path)
        self._first = self._peek_first()
        if is_file_level(self.format):
            self._files = [self.path]
            self.skipped.clear()  # the whole-file reader reads (and reports) these lines again

    # ------------------------------------------------------------------ reading
    def _peek_first(self) -> tuple[TraceLine, dict] | None:
        """Read lines up to the first valid JSON object and fix the format."""
        for line in self._lines:
            try:
                obj = parse_json_object(line, self.path)
                fmt = self.options.input_format
                self.format = detect_format(obj, self.path, line.number) if fmt == "auto" else fmt
                return line, obj
            except TraceError as e:
                if not self.options.skip_invalid:
                    raise
                self.bytes_read += line.nbytes
                self.skipped.append(SkippedLine(line.number, e.message))
        raise TraceError(self.path, None, "no valid request in the trace")

    @property
    def block_size(self) -> int:
        """Tokens per block used for this trace (the trace's own for hash-id traces)."""
        if self.is_hash_id_trace:
            return self.options.trace_block_size or HASH_ID_FORMATS[self.format]  # type: ignore[index]
        return self.options.block_size

    @property
    def hit_cap(self) -> str:
        if self.options.hit_cap != "auto":
            return self.options.hit_cap
        return "none" if self.is_hash_id_trace else "vllm"

    @property
    def is_hash_id_trace(self) -> bool:
        """Whether lines carry prefix-chained block ids rather than text or tokens."""
        return self.format in HASH_ID_FORMATS

    def tokenizer_for(self, model: str | None) -> SegmentTokenizer:
        """The (memoising) tokenizer for a record's model; one per vocabulary."""
        name = self.options.tokenizer
        if name == "auto":
            name = tokenizer_for_model(model)
        tok = self.tokenizers.get(name)
        if tok is None:
            tok = self.tokenizers[name] = SegmentTokenizer(name)
        return tok

    @property
    def is_log(self) -> bool:
        """Whether this trace is made of whole-file agent logs (Claude Code, Codex)."""
        return bool(self._files)

    def _add_bytes(self, n: int) -> None:
        self.bytes_read += n

    def records(self) -> Iterator[TraceRecord]:
        """Parsed records in file order; malformed lines raise or are skipped."""
        assert self.format is not None
        if self._files:
            yield from read_log_records(
                self._files, self.format if self.options.input_format != "auto" else "auto",
                ReaderOptions(assume_prefix_tokens=self.options.assume_prefix_tokens),
                self.options.skip_invalid, self.skipped, self._add_bytes, self.formats_seen, self.warnings,
            )
            return
        parse = line_parser(self.format)
        first_line, first_obj = self._first  # type: ignore[misc]
        pending: Iterator[tuple[TraceLine, dict | None]] = itertools.chain(
            [(first_line, first_obj)], ((ln, None) for ln in self._lines)
        )
        for line, obj in pending:
            self.bytes_read += line.nbytes
            try:
                if obj is None:
                    obj = parse_json_object(line, self.path)
                yield parse(obj, self.path, line.number)
            except TraceError as e:
                if not self.options.skip_invalid:
                    raise
                self.skipped.append(SkippedLine(line.number, e.message))

    @property
    def format_label(self) -> str:
        """The format, or ``a+b`` when a folder mixes agent-log formats."""
        if len(self.formats_seen) > 1:
            return "+".join(sorted(self.formats_seen))
        return self.format or "unknown"

    def billed_records(self) -> Iterator[TraceRecord]:
        """Records with the batch output's usage attached (when one is given).

        A ``custom_id`` that repeats in the input would be billed twice, so it is
        an error; output rows that match no input line, and input lines with no
        output row, are counted in ``warnings``.
        """
        if self.options.batch_output is None:
            yield from self.records()
            return
        from kvcache.engine.traces import anthropic_messages, openai_chat

        loaders = {"openai-chat": openai_chat.load_batch_output, "openai-responses": openai_chat.load_batch_output,
                   anthropic_messages.NAME: anthropic_messages.load_batch_results}
        if self.format not in loaders:
            raise ConfigError(f"--batch-output pairs OpenAI or Anthropic batch files; this trace is {self.format}")
        mapping = loaders[self.format](self.options.batch_output)
        seen: set[str] = set()
        unbilled = 0
        for rec in self.records():
            if rec.request_id in seen:
                raise TraceError(self.path, rec.line, f"custom_id {rec.request_id!r} appears twice in the batch input")
            seen.add(rec.request_id)
            usage = mapping.get(rec.request_id)
            if usage is not None:
                rec.billed = usage
            else:
                unbilled += 1
            yield rec
        unmatched = len(set(mapping) - seen)
        if unmatched:
            self.warnings.append(f"{unmatched} row(s) of {self.options.batch_output} match no input line (by custom_id)")
        if unbilled:
            self.warnings.append(f"{unbilled} input line(s) have no billed row in {self.options.batch_output}")

    def _once_per_call(self, records: list[TraceRecord]) -> list[TraceRecord]:
        """Drop calls read before from another file (a resumed session copies them).

        A copy is the same API call: the same id, arrival and bill. Records
        without a bill or an arrival (SWE-agent, whose ids are per file) are
        never merged, so two different runs cannot be mistaken for one.
        """
        first: dict[tuple[object, ...], str | None] = {}
        out = []
        repeats = 0
        for r in records:
            if r.billed is None or r.arrival is None:
                out.append(r)
                continue
            key = (r.request_id, r.arrival, r.billed)
            if key in first and first[key] != r.path:
                repeats += 1
                continue
            first.setdefault(key, r.path)
            out.append(r)
        if repeats:
            self.warnings.append(f"{repeats} call(s) appear in more than one file; each is counted once")
        return out

    def ordered_records(self) -> Iterator[TraceRecord]:
        """Records in arrival order (file order among equal or missing arrivals).

        Agent logs are always buffered and sorted: their calls span files.
        """
        if self.options.sort or self._files:
            buffered = list(self.billed_records())
            if self._files:
                buffered = self._once_per_call(buffered)
            last = 0.0
            for r in buffered:  # a missing arrival inherits the previous one
                last = r.arrival if r.arrival is not None else last
                r.arrival = last
            buffered.sort(key=lambda r: r.arrival)  # type: ignore[arg-type,return-value]
            yield from buffered
            return
        last = float("-inf")
        for r in self.billed_records():
            if r.arrival is None:
                r.arrival = 0.0 if last == float("-inf") else last
            elif r.arrival < last:
                raise TraceError(
                    self.path, r.line,
                    f"arrival {r.arrival:g} is earlier than the previous request's {last:g}; "
                    "requests replay in arrival order, so sort the file or pass --sort",
                )
            last = r.arrival
            yield r

    # ------------------------------------------------------------------ requests
    def __iter__(self) -> Iterator[Request]:
        for index, rec in enumerate(self.ordered_records()):
            try:
                yield self.to_request(rec, index)
            except TraceError as e:
                # Lines that parse but cannot become a request (e.g. too few hash
                # ids) are malformed too: skipped under --skip-invalid, like others.
                if not self.options.skip_invalid:
                    raise
                self.skipped.append(SkippedLine(rec.line, e.message))

    def to_request(self, rec: TraceRecord, index: int) -> Request:
        """Tokenize/hash one record into an engine request."""
        if rec.hash_ids is not None:
            return self._hash_id_request(rec, index)
        bs = self.block_size
        pieces: list[Sequence[int]] | None = None
        if rec.segments is not None:
            tok = self.tokenizer_for(rec.model)
            pieces = [s if type(s) is tuple else tok.encode(s) for s in rec.segments]  # type: ignore[misc]
            n_prompt = sum(map(len, pieces))
            if rec.output_segments is not None:
                outputs = tok.encode_segments(rec.output_segments)
            else:
                outputs = tok.encode(rec.output_text) if rec.output_text is not None else None
        else:
            prompt = rec.prompt_token_ids or []
            n_prompt = len(prompt)
            outputs = rec.output_token_ids
        if not n_prompt:
            raise TraceError(self.path, rec.line, "the prompt renders to zero tokens")
        n_out = len(outputs) if outputs is not None else (rec.output_length or 0)
        kv_tokens = kv_token_count(n_prompt, n_out)
        salt = rec.org
        tail = outputs[: kv_tokens - n_prompt] if outputs is not None else []
        if pieces is not None and rec.session_id is not None:
            # Sessions re-send their history: the memo reuses the previous turn's
            # block keys and hashes only what is new.
            hashing = (self.options.hash_algo, salt, rec.lora_name, tok.name)
            keys = self._prefix_memo.keys(rec.session_id, rec.segments, pieces, tail, bs, hashing)  # type: ignore[arg-type]
        else:
            if pieces is not None:
                prompt = list(itertools.chain.from_iterable(pieces))
            keys = hash_token_blocks(prompt + list(tail), bs, self.options.hash_algo, salt, rec.lora_name)
        if outputs is None:
            keys.extend(_unknown_output_keys(index, len(keys), kv_tokens // bs))
        token_ids = None
        if self.options.keep_token_ids:
            token_ids = list(itertools.chain.from_iterable(pieces)) if pieces is not None else list(prompt)
            token_ids.extend(tail)
        cap = n_prompt - 1 if self.hit_cap == "vllm" else n_prompt
        billed = rec.billed
        breakpoint_tokens = None
        ends = list(itertools.accumulate(map(len, pieces))) if pieces is not None else None
        if rec.breakpoints and ends is not None:
            breakpoint_tokens = sorted({ends[i] for i in rec.breakpoints if 0 <= i < len(ends)})
        return Request(
            request_id=rec.request_id, block_keys=keys, prompt_tokens=n_prompt, kv_prompt_tokens=n_prompt,
            output_tokens=n_out, hit_cap_tokens=cap, session_id=rec.session_id, org=rec.org,
            arrival=rec.arrival or 0.0, model=rec.model, cache_ttl=rec.cache_ttl, breakpoint_tokens=breakpoint_tokens,
            segment_ends=ends,
            billed_prompt_tokens=billed.prompt_tokens if billed else None,
            billed_cached_tokens=billed.cached_tokens if billed else None,
            token_ids=token_ids,
        )

    def _hash_id_request(self, rec: TraceRecord, index: int) -> Request:
        bs = self.block_size
        ids = rec.hash_ids or []
        n_prompt = rec.input_length or 0
        need = -(-n_prompt // bs)
        if len(ids) != need:
            raise TraceError(
                self.path, rec.line,
                f"input_length {n_prompt} at {bs} tokens per block needs {need} hash ids but the line has {len(ids)}; "
                "check --trace-block-size",
            )
        n_out = rec.output_length or 0
        keys: list[BlockHash]
        org = rec.org
        if self.hit_cap == "none":
            # Every hash id is a whole block, as the trace's producer hashed it.
            kv_prompt = len(ids) * bs
            keys = list(ids) if not org else [(org, h) for h in ids]  # type: ignore[misc]
            cap = kv_prompt
        else:
            kv_prompt = n_prompt
            full = ids[: n_prompt // bs]
            keys = list(full) if not org else [(org, h) for h in full]  # type: ignore[misc]
            cap = n_prompt - 1
        kv_tokens = kv_token_count(kv_prompt, n_out)
        keys.extend(_unknown_output_keys(index, len(keys), kv_tokens // bs))
        token_ids = hash_id_tokens(ids, org, bs, kv_prompt) if self.options.keep_token_ids else None
        return Request(
            request_id=rec.request_id, block_keys=keys, prompt_tokens=n_prompt, kv_prompt_tokens=kv_prompt,
            output_tokens=n_out, hit_cap_tokens=cap, session_id=rec.session_id, org=org,
            arrival=rec.arrival or 0.0, token_ids=token_ids,
        )


def hash_id_tokens(hash_ids: Sequence[object], org: str | None, block_size: int, num_tokens: int) -> list[int]:
    """Stand-in token ids for a block-hash trace's prompt, ``num_tokens`` long.

    Hash id ``h`` (salted by the org, as the block keys are) always becomes the
    same ``block_size`` ids, so two requests that share a prefix of hash ids share
    those tokens exactly, and a model computes identical K/V for them. A prompt
    that ends inside its last block takes that block's leading ids.
    """
    out: list[int] = []
    for h in hash_ids:
        out.extend(pseudo_tokens(f"{org or ''}\x00{h}", block_size))
    return out[:num_tokens]


def _unknown_output_keys(index: int, start: int, end: int) -> list[BlockHash]:
    """Keys for decode blocks whose tokens the trace does not record.

    They still occupy the cache (and can evict others) but can never be hit,
    because no other request can know tokens nobody recorded.
    """
    return [("out", index, i) for i in range(start, end)]  # type: ignore[misc]
