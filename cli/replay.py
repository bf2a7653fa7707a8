"""``kvcache replay``: replay a trace through the prefix-cache engine."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
import typer

from kvcache.cli.errors import UsageError, handle_errors


class InputFormat(str, Enum):
    auto = "auto"
    native = "native"
    token_ids = "token-ids"
    mooncake = "mooncake"
    bailian = "bailian"
    claude_code = "claude-code"
    codex = "codex"
    openai_chat = "openai-chat"
    openai_responses = "openai-responses"
    anthropic_messages = "anthropic-messages"
    openhands = "openhands"
    swe_agent = "swe-agent"


class HashChoice(str, Enum):
    xxh3_128 = "xxh3_128"
    sha256 = "sha256"


class FreeOrderChoice(str, Enum):
    current = "current"
    classic = "classic"


class HitCapChoice(str, Enum):
    auto = "auto"
    vllm = "vllm"
    none = "none"


class ProviderChoice(str, Enum):
    vllm = "vllm"
    anthropic = "anthropic"
    openai = "openai"
    gemini = "gemini"
    deepseek = "deepseek"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


@handle_errors
def replay(
    trace: str = typer.Argument(..., help="Trace file (.jsonl, .jsonl.gz, - for stdin) or a folder of agent logs (e.g. ~/.claude/projects).", show_default=False),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table for people, json for machines."),
    per_request: str | None = typer.Option(None, "--per-request", metavar="FILE", help="Write one row per request to FILE (.csv or .jsonl)."),
    input_format: InputFormat = typer.Option(InputFormat.auto, "--input-format", help="Trace format; auto-detected from the first line."),
    block_size: int | None = typer.Option(None, "--block-size", min=1, help="Tokens per KV block for token and native traces (default 16, as in vLLM)."),
    trace_block_size: int | None = typer.Option(None, "--trace-block-size", min=1, help="Tokens per hash id in block-hash traces (default: the format's, 512 for Mooncake, 16 for Bailian)."),
    kv_blocks: int | None = typer.Option(None, "--kv-blocks", min=2, help="Pool size in blocks, counting vLLM's reserved null block (N-1 usable). Default: unbounded."),
    kv_memory: str | None = typer.Option(None, "--kv-memory", help="Pool size as KV memory, e.g. 80GiB; needs --model-shape."),
    model_shape: str | None = typer.Option(None, "--model-shape", help="Model whose KV shape sizes a block, e.g. llama-3.1-8b (see engine/data/model_shapes.json)."),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV dtype for --kv-memory (bfloat16, float16, fp8, float32; default: the model's)."),
    tokenizer: str = typer.Option("auto", "--tokenizer", help="Vocabulary for traces of text (native, agent logs, request bodies): auto (by each request's model: o200k_base for GPT-4o/4.1/5 and o-series, else cl100k_base), cl100k_base, o200k_base, or a path to a Hugging Face tokenizer.json (needs the hf extra)."),
    hash_algo: HashChoice = typer.Option(HashChoice.xxh3_128, "--hash", help="Block hash: xxh3_128 (fast) or sha256 (vLLM's default, bit-exact). Hit results are identical."),
    free_order: FreeOrderChoice = typer.Option(FreeOrderChoice.current, "--free-order", help="current: vLLM>=0.28 puts freed unhashed blocks at the free-queue head; classic: vLLM<=0.27 appends every freed block."),
    hit_cap: HitCapChoice = typer.Option(HitCapChoice.auto, "--hit-cap", help="vllm: hits stop at prompt-1 tokens on full blocks; none: every trace block may hit (Mooncake convention); auto: none for block-hash traces, vllm otherwise."),
    provider: ProviderChoice = typer.Option(ProviderChoice.vllm, "--provider", help="Whose cache to model: vllm (the block pool: capacity and LRU) or a hosted provider's rules (minimum prefix, granularity, TTL, Anthropic's breakpoints; engine/data/providers.json)."),
    provider_ttl: str | None = typer.Option(None, "--provider-ttl", help="A hosted provider's cache TTL: 1h for Anthropic's extended cache, 24h for OpenAI's extended retention. Default: the provider's (5 min for Anthropic)."),
    batch_output: str | None = typer.Option(None, "--batch-output", metavar="FILE", help="OpenAI Batch output or Anthropic Message Batches results JSONL: its billed usage is paired with the input lines by custom_id."),
    assume_prefix_tokens: int | None = typer.Option(None, "--assume-prefix-tokens", min=0, help="Agent logs: prompt tokens the log leaves out (Claude Code's system prompt and tools). Default: inferred from the first call's billed prompt minus the tokens the log shows."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip malformed lines (reported as skipped_lines) instead of failing."),
    sort: bool = typer.Option(False, "--sort", help="Buffer the trace and sort it by arrival; without it arrivals must not go backwards."),
    top: int = typer.Option(10, "--top", min=0, help="Sessions and orgs shown in the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings on stderr."),
) -> None:
    """Replay a trace and report block-level prefix-cache hit rates.

    Requests run one at a time in arrival order (sequential replay: they do not
    overlap in time yet). Each request looks up the longest cached prefix of its
    prompt with vLLM v1's rules (16-token blocks, chained hashes, org as cache
    salt, LRU eviction), then its prompt blocks, and its output blocks when the
    trace records the reply, are cached when it completes. With --provider the
    same prompts meet a hosted provider's cache rules instead. When the trace
    records what the provider billed, the prediction is reported beside the bill.
    """
    from kvcache.analyzers.billing import BilledComparison
    from kvcache.analyzers.hit_rates import HitRateReport
    from kvcache.analyzers.replay_report import ReplayReport, notes_for
    from kvcache.cli.output import Output, PerRequestWriter
    from kvcache.engine.capacity import resolve_num_blocks
    from kvcache.engine.config import DEFAULT_BLOCK_SIZE, CacheConfig
    from kvcache.engine.errors import ConfigError
    from kvcache.engine.provider_cache import ProviderReplayer
    from kvcache.engine.replay import SequentialReplayer
    from kvcache.engine.traces.io import trace_size
    from kvcache.engine.traces.stream import RequestStream, StreamOptions

    out = Output(output_format.value, quiet)
    if kv_memory is None and (model_shape is not None or kv_dtype is not None):
        raise UsageError("--model-shape and --kv-dtype only size the pool together with --kv-memory")
    try:
        options = StreamOptions(
            input_format=input_format.value, block_size=block_size or DEFAULT_BLOCK_SIZE, trace_block_size=trace_block_size,
            hash_algo=hash_algo.value, hit_cap=hit_cap.value, tokenizer=tokenizer,
            assume_prefix_tokens=assume_prefix_tokens, batch_output=batch_output, skip_invalid=skip_invalid, sort=sort,
        )
    except ConfigError as e:
        raise UsageError(str(e)) from None
    stream = RequestStream(trace, options)
    if not stream.is_hash_id_trace and trace_block_size is not None:
        raise UsageError("--trace-block-size applies to block-hash traces only")
    if assume_prefix_tokens is not None and not stream.is_log:
        raise UsageError("--assume-prefix-tokens applies to agent logs (Claude Code, Codex, OpenHands)")
    if tokenizer != "auto" and (stream.is_hash_id_trace or stream.format == "token-ids"):
        raise UsageError("--tokenizer applies to traces of text; this trace is already tokenized or hashed")
    if batch_output is not None and stream.format not in ("openai-chat", "openai-responses", "anthropic-messages"):
        raise UsageError(f"--batch-output pairs OpenAI or Anthropic batch files; this trace is {stream.format}")
    if stream.is_hash_id_trace and block_size is not None:
        raise UsageError("a block-hash trace has its own block size: use --trace-block-size, not --block-size")
    bs = stream.block_size
    try:
        num_blocks = resolve_num_blocks(bs, kv_blocks, kv_memory, model_shape, kv_dtype)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    config = CacheConfig(block_size=bs, num_blocks=num_blocks, hash_algo=hash_algo.value, free_order=free_order.value)
    if provider is ProviderChoice.vllm:
        if provider_ttl is not None:
            raise UsageError("--provider-ttl applies to hosted providers, not vllm")
        replayer: SequentialReplayer | ProviderReplayer = SequentialReplayer(config)
    else:
        if num_blocks is not None:
            raise UsageError("--kv-blocks and --kv-memory size a vLLM pool; hosted providers have no capacity to set")
        try:
            replayer = ProviderReplayer(provider.value, bs, provider_ttl)
        except ConfigError as e:
            raise UsageError(str(e)) from None
    hit_rates = HitRateReport()
    billing = BilledComparison()
    writer = PerRequestWriter(per_request) if per_request else None
    try:
        with out.progress(f"replaying {Path(trace).name if trace != '-' else 'stdin'}", trace_size(trace)) as advance:
            seen = 0
            for result in replayer.run(stream):
                hit_rates.add(result)
                billing.add(result)
                if writer is not None:
                    writer.write(result)
                advance(stream.bytes_read - seen)
                seen = stream.bytes_read
    finally:
        if writer is not None:
            writer.close()
    report = ReplayReport(
        trace=trace, input_format=stream.format_label, config=config, hit_cap=stream.hit_cap,
        hit_rates=hit_rates, stats=replayer.stats,
        skipped=[{"line": s.line, "reason": s.reason, **({"path": s.path} if s.path else {})} for s in stream.skipped],
        notes=notes_for(stream.format or "", stream.hit_cap, sorted(stream.tokenizers), provider.value,
                        bool(getattr(replayer, "breakpoint_models", None))),
        implementation=replayer.implementation, billing=billing, provider=provider.value,
        warnings=stream.warnings,
    )
    for message in stream.warnings:
        out.warn(message)
    if report.skipped:
        first = ", ".join(f"line {s['line']}: {s['reason']}" for s in report.skipped[:3])
        out.warn(f"skipped {len(report.skipped)} malformed line(s) ({first}{', ...' if len(report.skipped) > 3 else ''})")
    out.replay(report.to_dict(), top=top)
