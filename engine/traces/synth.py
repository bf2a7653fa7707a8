"""Deterministic synthetic agent traffic: native kvcache requests and Mooncake hash ids.

Each org shares one system prompt and one tool set. Its users run tool-using agent sessions
in which a request's ``messages`` are the previous request's messages, then the previous
reply (``output_text`` plus its ``output_tool_calls``), then tool results or a user follow-up. A few
sessions carry a real-world cache breaker (codes from ``reference/breakers.md``):

* ``timestamp`` (KV101): ``Current time: ...Z`` is line 2 of the system prompt, every request.
* ``tool_order`` (KV201): the tools are reshuffled on every request from the breaker turn on.
* ``json_keys`` (KV202): at the breaker turn the JSON already in history (tool-call arguments,
  JSON tool results) is re-serialized with its keys in reverse order.
* ``truncation`` (KV501): at the breaker turn early messages after the first are dropped.

Both traces follow one plan (sessions, arrivals, breakers). All draws come from
``random.Random`` instances seeded by ``SynthConfig.seed``; nothing reads the clock.
"""

from __future__ import annotations

import copy
import heapq
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from kvcache.engine.errors import ConfigError
from kvcache.engine.traces import synth_text as text

BREAKER_KINDS: tuple[str, ...] = ("timestamp", "tool_order", "json_keys", "truncation")
_EPOCH = datetime(2026, 11, 28, 9, 0, 0, tzinfo=timezone.utc)  # wall time of arrival 0.0
_MIN_GAP = 2.0  # seconds between turns; keeps second-resolution timestamps distinct
@dataclass(slots=True)
class SynthConfig:
    """What traffic to synthesize; every field is checked on construction.

    Attributes:
        seed: the only source of randomness; equal seeds give identical traces.
        orgs, users_per_org, sessions_per_user: traffic shape (sessions = their product).
        min_turns, max_turns: requests per session, inclusive (breaker sessions get at least 3).
        start, span: sessions start uniformly within ``[start, start + span)`` seconds.
        mean_gap: mean seconds between turns of a session (exponential, at least 2 s).
        breaker_rate: share of sessions that carry a breaker; when above 0 each kind in
            ``breakers`` appears at least once, given enough sessions.
        breakers: which of ``BREAKER_KINDS`` to inject, assigned round-robin.
        system_words, tools_per_org: inclusive ``(lo, hi)`` sizes of each org's prefix.
        block_size: tokens per hash id in the Mooncake trace.
    """

    seed: int = 0
    orgs: int = 3
    users_per_org: int = 4
    sessions_per_user: int = 2
    min_turns: int = 3
    max_turns: int = 10
    start: float = 0.0
    span: float = 1800.0
    mean_gap: float = 20.0
    breaker_rate: float = 0.15
    breakers: tuple[str, ...] = BREAKER_KINDS
    system_words: tuple[int, int] = (300, 1500)
    tools_per_org: tuple[int, int] = (5, 12)
    block_size: int = 512

    def __post_init__(self) -> None:
        for name in ("seed", "orgs", "users_per_org", "sessions_per_user", "min_turns", "max_turns", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or (name != "seed" and value < 1):
                kind = "an" if name == "seed" else "a positive"
                raise ConfigError(f"synth: {name} must be {kind} integer, got {value!r}")
        if self.max_turns < self.min_turns:
            raise ConfigError(f"synth: max_turns ({self.max_turns}) is below min_turns ({self.min_turns})")
        for name, low, high in (("start", 0, 1e12), ("span", 0, 1e12), ("mean_gap", 1e-3, 1e9),
                                ("breaker_rate", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(f"synth: {name} must be a number in [{low:g}, {high:g}], got {value!r}")
        self.breakers = tuple(self.breakers)
        if any(b not in BREAKER_KINDS for b in self.breakers) or len(set(self.breakers)) != len(self.breakers):
            raise ConfigError(f"synth: breakers must be distinct names from {BREAKER_KINDS}, got {self.breakers!r}")
        for name, low, high in (("system_words", 50, 100_000), ("tools_per_org", 2, len(text.TOOLS))):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or not all(isinstance(v, int) for v in pair) or not low <= pair[0] <= pair[1] <= high:
                raise ConfigError(f"synth: {name} must be (lo, hi) with {low} <= lo <= hi <= {high}, got {pair!r}")
            setattr(self, name, pair)


@dataclass(slots=True)
class _Session:
    ordinal: int  # position in (org, user, session) order; breaks arrival ties
    org: int
    session_id: str
    arrivals: list[float]
    breaker: str | None
    breaker_turn: int


@dataclass(slots=True)
class _Org:
    name: str
    model: str
    system: str
    tools: list[dict]
    ext: str
    parts: bool  # user content as a list of text parts, which readers must also accept

    def user(self, text: str) -> dict:
        return {"role": "user", "content": [{"type": "text", "text": text}] if self.parts else text}


def _plan(config: SynthConfig) -> tuple[list[str], list[_Session]]:
    """Org names and every session's arrivals and breaker, from one rng."""
    rng = random.Random(config.seed)
    names = [text.ORGS[i % len(text.ORGS)] + (str(i // len(text.ORGS)) if i >= len(text.ORGS) else "") for i in range(config.orgs)]
    per_org = config.users_per_org * config.sessions_per_user
    total, kinds = config.orgs * per_org, config.breakers if config.breaker_rate > 0 else ()
    n_broken = min(total, max(len(kinds), round(config.breaker_rate * total))) if kinds else 0
    broken = {k: kinds[j % len(kinds)] for j, k in enumerate(rng.sample(range(total), n_broken))}
    sessions = []
    for ordinal in range(total):
        org, rest = divmod(ordinal, per_org)
        kind, n = broken.get(ordinal), rng.randint(config.min_turns, config.max_turns)
        n = max(n, 3) if kind else n
        arrivals = [round(config.start + rng.uniform(0, config.span), 3)]
        for _ in range(n - 1):
            arrivals.append(round(arrivals[-1] + max(_MIN_GAP, rng.expovariate(1 / config.mean_gap)), 3))
        turn = 0 if kind in (None, "timestamp") else rng.randint(1 if kind == "tool_order" else 2, n - 1)
        sid = f"{names[org]}-u{rest // config.sessions_per_user}-s{rest % config.sessions_per_user}"
        sessions.append(_Session(ordinal, org, sid, arrivals, kind, turn))
    return names, sessions


def breaker_sessions(config: SynthConfig) -> dict[str, tuple[str, int]]:
    """Sessions that carry a breaker: ``{session_id: (kind, first turn it changes the prompt)}``."""
    return {s.session_id: (s.breaker, s.breaker_turn) for s in _plan(config)[1] if s.breaker}


def _merge(sessions: list[_Session], open_session: Callable[[_Session], Iterator[dict]]) -> Iterator[dict]:
    """Records by (arrival, ordinal, turn); a record is built only when due, from live sessions only."""
    pending = sorted(sessions, key=lambda s: (s.arrivals[0], s.ordinal))
    heap: list[tuple[float, int, int, Iterator[dict], _Session]] = []
    i = 0
    while i < len(pending) or heap:
        while i < len(pending) and (not heap or pending[i].arrivals[0] <= heap[0][0]):
            s = pending[i]
            heapq.heappush(heap, (s.arrivals[0], s.ordinal, 0, open_session(s), s))
            i += 1
        _, ordinal, turn, records, s = heapq.heappop(heap)
        yield next(records)
        if turn + 1 < len(s.arrivals):
            heapq.heappush(heap, (s.arrivals[turn + 1], ordinal, turn + 1, records, s))


def _build_org(config: SynthConfig, index: int, name: str) -> _Org:
    """One org's system prompt (sentences drawn round-robin over sections, then notes) and tools."""
    rng = random.Random(f"{config.seed}/org/{index}")
    repo, lang, ext = rng.choice(text.REPOS)
    target = rng.randint(*config.system_words)
    lines = [f"You are {rng.choice(('Forge', 'Pilot', 'Atlas', 'Scout'))}, the coding agent {name.capitalize()} "
             f"engineers use on the {repo} repository, written mostly in {lang}."]
    pools = {head: rng.sample(sents, len(sents)) for head, sents in text.SECTIONS.items()}
    picked: dict[str, list[str]] = {head: [] for head in text.SECTIONS}
    words = len(lines[0].split())
    while words < target and any(pools.values()):
        for head, pool in pools.items():
            if pool and words < target:
                picked[head].append(pool.pop())
                words += len(picked[head][-1].split())
    for head, sents in picked.items():
        lines += [f"\n# {head}", *(f"- {s}" for s in sents)] if sents else []
    lines += ["\n# Repository notes"] if words < target else []
    while words < target:
        lines.append(f"- `src/{rng.choice(text.MODS)}/{rng.choice(text.STEMS)}.{ext}` holds the {rng.choice(text.NOTE_PARTS[0])} "
                     f"for {rng.choice(text.MODS)}; {rng.choice(text.NOTE_PARTS[1])}.")
        words += len(lines[-1].split())
    tools = []
    for spec in rng.sample(text.TOOLS, rng.randint(*config.tools_per_org)):
        tname, desc, *params = spec.split("|")
        props = {p: {"type": t, "description": d} for p, t, d, _ in (x.split(":", 3) for x in params)}
        schema = {"type": "object", "properties": props, "required": [next(iter(props))]}
        tools.append({"type": "function", "function": {"name": tname, "description": desc, "parameters": schema}})
    return _Org(name, rng.choice(text.MODELS), "\n".join(lines), tools, ext, index % 3 == 1)


def _fill(rng: random.Random, mod: str, ext: str) -> dict[str, str | int]:
    """Fresh values for the ``{m}``, ``{s}``, ``{k}``... slots of the text templates."""
    fill: dict[str, str | int] = {
        "m": mod, "M": mod.capitalize(), "x": ext, "s": rng.choice(text.STEMS), "k": rng.randint(2, 400),
        "d": rng.randint(1, 3), "v": rng.choice(("load", "save", "sync", "apply")), "V": "Load",
        "a": rng.choice(("order_id", "payload", "cursor")), "h": f"{rng.getrandbits(28):07x}",
        "f": rng.choice(("Fix", "Refactor", "Speed up", "Test")), "t": rng.choice(("retries", "limits", "errors"))}
    fill["c"] = rng.choice(text.CODE).format(**fill)
    return fill


def _call(rng: random.Random, spec: str, mod: str, ext: str) -> tuple[str, dict, str]:
    """One tool call: its name, its arguments and a realistic result (listing, code, tests, JSON)."""
    name, _, *params = spec.split("|")
    fill, n = _fill(rng, mod, ext), rng.randint
    args: dict[str, str | int | bool] = {}
    for p, ptype, _, template in (x.split(":", 3) for x in params):
        value = template.format(**fill)
        args[p] = int(value) if ptype == "integer" else value == "true" if ptype == "boolean" else value
    if name in text.LINES:
        tmpl, lo, hi = text.LINES[name]
        return name, args, "\n".join(tmpl.format(**_fill(rng, mod, ext)) for _ in range(n(lo, hi)))
    if name in ("run_tests", "bash"):
        total, failed, bar = n(12, 120), rng.choice((0, 0, 1, 2)), "=" * 20
        fails = "".join(f"FAILED tests/test_{mod}.py::test_{mod}_{i} - assert {n(100, 999)} == {n(100, 999)}\n"
                        for i in range(failed))
        return name, args, (f"{bar} test session starts {bar}\ncollected {total} items\n\ntests/test_{mod}.py "
                            f"{'.' * (total - failed)}{'F' * failed} [100%]\n\n{fails}{bar} {failed} failed, "
                            f"{total - failed} passed in {n(1, 30)}.{n(10, 99)}s {bar}")
    data = {"http_request": lambda: {"status": 200, "data": {"id": f"{mod[:3]}_{rng.getrandbits(40):010x}",
                                     "amount_cents": n(100, 99999), "currency": "USD", "state": "failed"},
                                     "request_id": f"req_{n(10**5, 10**6)}"},
            "search_docs": lambda: {"results": [{"title": f"{mod} {t}", "url": f"https://handbook.internal/{mod}/{t}",
                                                 "score": round(rng.random(), 3)} for t in ("retries", "errors")],
                                    "total": n(2, 40)},
            "sql_query": lambda: {"columns": ["id", "state", "amount_cents"], "rows": [
                [n(1, 10**6), "failed", n(100, 9999)] for _ in range(n(1, 6))], "elapsed_ms": n(2, 900)},
            "get_ticket": lambda: {"key": args["key"], "summary": f"{mod} totals drift", "status": "In Progress",
                                   "labels": [mod, "bug"], "comments": [f"Seen again after deploy {n(100, 999)}."]}}
    return name, args, json.dumps(data[name]())


def _reorder(msg: dict) -> dict:
    """The same message with its JSON re-serialized in reverse key order (same data, new bytes)."""
    def flip(text: str) -> str:
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        return json.dumps(dict(reversed(obj.items()))) if isinstance(obj, dict) else text

    if msg.get("tool_calls"):
        calls = [{**c, "function": {**c["function"], "arguments": flip(c["function"]["arguments"])}}
                 for c in msg["tool_calls"]]
        return {**msg, "tool_calls": calls}
    return {**msg, "content": flip(msg["content"])} if msg["role"] == "tool" else msg


def _native_session(org: _Org, s: _Session, seed: int) -> Iterator[dict]:
    """One session's native requests, turn by turn, with its breaker applied."""
    rng = random.Random(f"{seed}/{s.session_id}/text")
    mod = rng.choice(text.MODS)
    history = [org.user(f"{rng.choice(text.TASKS).format(m=mod, k=rng.randint(100, 999))} {rng.choice(text.ASKS)}")]
    specs = {spec.split("|", 1)[0]: spec for spec in text.TOOLS}
    tools, out, calls, results = org.tools, "", [], []
    for t, arrival in enumerate(s.arrivals):
        if t:
            reply = {"role": "assistant", "content": out, **({"tool_calls": calls} if calls else {})}
            history = [*history, reply, *(results or [org.user(rng.choice(("Yes, go ahead.",
                       "Looks good; please also update the docs.", f"Also check the {rng.choice(text.MODS)} module.")))])]
            if s.breaker == "json_keys" and t == s.breaker_turn:
                history = [_reorder(m) for m in history]
            if s.breaker == "truncation" and t == s.breaker_turn:  # keep the task, cut at a reply near the middle
                cut = min((i for i, m in enumerate(history) if i >= 2 and m["role"] == "assistant"),
                          key=lambda i: abs(i - len(history) // 2))
                history = history[:1] + history[cut:]
        if s.breaker == "tool_order" and t >= s.breaker_turn:
            shuffled = list(tools)
            while shuffled == tools:
                rng.shuffle(shuffled)
            tools = shuffled
        calls, results = [], []
        if t == len(s.arrivals) - 1:
            out = (f"Done. The {mod} issue came from a missing None check in `src/{mod}/service.{org.ext}`. I added "
                   f"the check and a regression test; {rng.randint(12, 240)} tests pass.\n\n- Root cause: {mod} "
                   "records without items\n- Fix: guard and default to zero\n- Follow-up: none")
        elif t and rng.random() < 0.2:
            out = f"I've updated `src/{mod}/{rng.choice(text.STEMS)}.{org.ext}`. Should I also add a changelog entry?"
        else:
            for _ in range(1 + (rng.random() < 0.25)):  # sometimes two parallel calls
                name, args, result = _call(rng, specs[rng.choice(tools)["function"]["name"]], mod, org.ext)
                cid = f"call_{rng.getrandbits(48):012x}"
                calls.append({"id": cid, "type": "function",
                              "function": {"name": name, "arguments": json.dumps(args)}})
                results.append({"role": "tool", "tool_call_id": cid, "content": result})
                out = out if len(calls) > 1 else rng.choice(text.LEADS) + text.INTENTS[name].format(next(iter(args.values())))
        system = org.system
        if s.breaker == "timestamp":
            head, rest = system.split("\n", 1)
            system = f"{head}\nCurrent time: {_EPOCH + timedelta(seconds=arrival):%Y-%m-%dT%H:%M:%SZ}\n{rest}"
        yield {"request_id": f"{s.session_id}-t{t}", "session_id": s.session_id, "org": org.name, "arrival": arrival,
               "model": org.model, "tools": copy.deepcopy(tools), "system": system,
               "messages": copy.deepcopy(history), "output_text": out,
               **({"output_tool_calls": copy.deepcopy(calls)} if calls else {})}


def generate(config: SynthConfig) -> list[dict]:
    """Native kvcache requests for ``config``, sorted by arrival (ties keep plan order).

    Args:
        config: traffic shape and seed.

    Returns:
        One dict per request: ``request_id``, ``session_id``, ``org``, ``arrival``, ``model``,
        ``tools``, ``system``, ``messages`` and ``output_text``.
    """
    names, sessions = _plan(config)
    orgs = [_build_org(config, i, name) for i, name in enumerate(names)]
    return list(_merge(sessions, lambda s: _native_session(orgs[s.org], s, config.seed)))


def _hash_session(s: _Session, seed: int, lens: tuple[int, int], prefix: Callable[[], list[int]],
                  fresh: Callable[[int], range], block_size: int) -> Iterator[dict]:
    """One session's hash-id records; token lengths are agent-scale draws, not rendered text.

    Each turn keeps the previous turn's ids for the blocks before ``d``, its first changed token::

        prompt:    [ system text | tools | task | reply 0 | result 0 | reply 1 | result 1 ... ]
                   |<-- org prefix: ids shared by all the org's sessions -->|
        turn t:    o0 o1 o2 o3 o4 | s5 s6 s7 s8           s8 covers a partial block
        turn t+1:  o0 o1 o2 o3 o4 | s5 s6 s7 n9 n10 n11   d = old length, so s8 is not kept

    Breakers move ``d`` back: ``timestamp`` to 0, ``tool_order`` to the start of the tools,
    ``json_keys`` and ``truncation`` to the start of reply 0 (truncation also drops old pairs).
    """
    rng = random.Random(f"{seed}/{s.session_id}/len")
    text_len, sys_len = lens[0], sum(lens)
    items = [rng.randint(40, 600)]  # the task, then a (reply, result) pair per turn
    ids: list[int] = []
    prev_len, out = sys_len, 0
    for t, arrival in enumerate(s.arrivals):
        d = prev_len
        if t == 0:
            ids = prefix() if s.breaker != "timestamp" else []
        else:
            new = rng.randint(10, 150) if rng.random() < 0.2 else min(8000, int(rng.lognormvariate(6.3, 0.9)))
            items += [out, new]
            if t == s.breaker_turn and s.breaker in ("json_keys", "truncation"):
                d = sys_len + items[0]
                if s.breaker == "truncation":
                    del items[1:2 * ((len(items) - 1) // 4) + 1]
        if s.breaker == "timestamp" or (s.breaker == "tool_order" and t >= s.breaker_turn):
            d = 0 if s.breaker == "timestamp" else min(d, text_len)
        prev_len, keep = sys_len + sum(items), d // block_size
        ids = ids[:keep]
        ids.extend(fresh(-(-prev_len // block_size) - keep))
        out = rng.randint(20, 400)
        yield {"timestamp": round(arrival * 1000), "input_length": prev_len, "output_length": out, "hash_ids": ids}


def iter_hash_ids(config: SynthConfig, *, with_session: bool = False) -> Iterator[dict]:
    """Stream a Mooncake-style trace in arrival order, holding only the live sessions.

    Records are ``{"timestamp": ms, "input_length", "output_length", "hash_ids"}`` with one id
    per ``config.block_size`` tokens, ``ceil(input_length / block_size)`` in all. Equal ids mean
    an equal whole prefix up to and including that block; ids count from 0 in order of first use.

    Args:
        config: traffic shape and seed; the plan (sessions, arrivals, breakers) is :func:`generate`'s.
        with_session: also add ``request_id``, ``session_id`` and ``org`` to each record.

    Yields:
        One record per request.
    """
    names, sessions = _plan(config)
    counter: list[int] = [0]
    prefixes: dict[int, list[int]] = {}  # org -> its shared system-and-tools ids
    lens = [(r.randint(1200, 4000), r.randint(800, 3500))
            for r in (random.Random(f"{config.seed}/org/{i}/len") for i in range(config.orgs))]

    def fresh(n: int) -> range:
        counter[0] += n
        return range(counter[0] - n, counter[0])

    def opener(s: _Session) -> Iterator[dict]:
        def prefix() -> list[int]:  # allocated at the org's first use, so ids follow first appearance
            if s.org not in prefixes:
                prefixes[s.org] = list(fresh(sum(lens[s.org]) // config.block_size))
            return prefixes[s.org]

        for t, rec in enumerate(_hash_session(s, config.seed, lens[s.org], prefix, fresh, config.block_size)):
            if with_session:
                rec.update(request_id=f"{s.session_id}-t{t}", session_id=s.session_id, org=names[s.org])
            yield rec

    yield from _merge(sessions, opener)


def generate_hash_ids(config: SynthConfig, *, with_session: bool = False) -> list[dict]:
    """All of :func:`iter_hash_ids` as a list."""
    return list(iter_hash_ids(config, with_session=with_session))


def write_jsonl(records: Iterable[dict], path: str | Path | TextIO) -> int:
    """Write one compact JSON object per line (UTF-8, ``\\n`` endings); returns the line count.

    ``path`` may also be an open text stream (such as ``sys.stdout``).
    """
    if not isinstance(path, (str, Path)):
        return _write_lines(records, path)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        return _write_lines(records, f)


def _write_lines(records: Iterable[dict], f: TextIO) -> int:
    count = 0
    for rec in records:
        f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count
