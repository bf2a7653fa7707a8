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


class AttnImpl(str, Enum):
    auto = "auto"
    torch = "torch"
    reference = "reference"
    triton = "triton"
    flex = "flex"
    flashinfer = "flashinfer"
    flash_attn = "flash_attn"


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
    sequential: bool = typer.Option(False, "--sequential", help="Run requests one at a time in arrival order, each to completion (the engine-core replay: no overlap, no budget, no clock)."),
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens", min=1, help="Scheduler: tokens per engine step, prefill and decode together (vLLM's offline default)."),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1, help="Scheduler: most requests running at once."),
    chunked_prefill: bool = typer.Option(True, "--chunked-prefill/--no-chunked-prefill", help="Scheduler: split long prompts across steps (vLLM v1 default: on)."),
    hardware: str = typer.Option("h100", "--hardware", help="Accelerator priced by the step-time roofline: a profile in engine/data/hardware.json (h100, h200, a100, l4, ...), cpu-measured (measured now; needs torch), or a JSON profile file."),
    compute: bool = typer.Option(False, "--compute", help="Run a real model on every scheduled step, its K/V in the pool's pages (needs the torch extra)."),
    model: str = typer.Option("tiny-random", "--model", help="--compute model: tiny-random (seeded, CI-sized), a Llama-family .gguf file, or a Hugging Face checkpoint directory."),
    verify: bool = typer.Option(False, "--verify", help="With --compute: recompute every prompt from scratch in an empty cache and report the largest relative error of the last-prompt-token logits."),
    attn_impl: AttnImpl = typer.Option(AttnImpl.auto, "--attn-impl", help="With --compute: paged-attention implementation (see kvcache.kernels)."),
    top: int = typer.Option(10, "--top", min=0, help="Sessions and orgs shown in the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings on stderr."),
) -> None:
    """Replay a trace and report block-level prefix-cache hit rates.

    Requests are scheduled as vLLM v1 does (continuous batching: a token budget
    per step, chunked prefill, recompute preemption when blocks run out) on a
    simulated clock whose step times come from a roofline model of --model-shape
    (default llama-3.1-8b) on --hardware. Each request looks up the longest cached
    prefix of its prompt with vLLM v1's rules (16-token blocks, chained hashes,
    org as cache salt, LRU eviction). --sequential runs requests one at a time
    instead. --compute runs a real model whose K/V live in the pool's pages.
    With --provider the same prompts meet a hosted provider's cache rules
    instead. When the trace records what the provider billed, the prediction is
    reported beside the bill.
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
    if kv_memory is None and kv_dtype is not None:
        raise UsageError("--kv-dtype only sizes the pool together with --kv-memory")
    scheduled = provider is ProviderChoice.vllm and not sequential
    if not scheduled and kv_memory is None and model_shape is not None:
        raise UsageError("--model-shape sizes the pool with --kv-memory (and prices the scheduler's steps, which --sequential and --provider do not run)")
    if sequential and compute:
        raise UsageError("--compute runs on the scheduler; drop --sequential")
    if (verify or attn_impl is not AttnImpl.auto or model != "tiny-random") and not compute:
        raise UsageError("--model, --verify and --attn-impl apply with --compute")
    if compute and provider is not ProviderChoice.vllm:
        raise UsageError("--compute runs vLLM's engine; it does not apply with --provider")
    compute_model = None
    if compute:
        from kvcache.engine.compute import load_compute_model

        compute_model = load_compute_model(model)
        if tokenizer == "auto" and compute_model.tokenizer_name is not None:
            tokenizer = compute_model.tokenizer_name  # the model's own vocabulary for traces of text
    try:
        options = StreamOptions(
            input_format=input_format.value, block_size=block_size or DEFAULT_BLOCK_SIZE, trace_block_size=trace_block_size,
            hash_algo=hash_algo.value, hit_cap=hit_cap.value, tokenizer=tokenizer,
            assume_prefix_tokens=assume_prefix_tokens, batch_output=batch_output, skip_invalid=skip_invalid, sort=sort,
            keep_token_ids=compute,
        )
    except ConfigError as e:
        raise UsageError(str(e)) from None
    stream = RequestStream(trace, options)
    if not stream.is_hash_id_trace and trace_block_size is not None:
        raise UsageError("--trace-block-size applies to block-hash traces only")
    if assume_prefix_tokens is not None and not stream.is_log:
        raise UsageError("--assume-prefix-tokens applies to agent logs (Claude Code, Codex, OpenHands)")
    if compute and stream.hit_cap == "none":
        if hit_cap is HitCapChoice.none:
            raise UsageError("--compute needs a token to compute for every request: use --hit-cap vllm, not none")
        stream.options.hit_cap = "vllm"  # a fully hit prompt would leave nothing to sample from
    model_vocab = compute_model is not None and tokenizer == compute_model.tokenizer_name
    if tokenizer != "auto" and not model_vocab and (stream.is_hash_id_trace or stream.format == "token-ids"):
        raise UsageError("--tokenizer applies to traces of text; this trace is already tokenized or hashed")
    if batch_output is not None and stream.format not in ("openai-chat", "openai-responses", "anthropic-messages"):
        raise UsageError(f"--batch-output pairs OpenAI or Anthropic batch files; this trace is {stream.format}")
    if stream.is_hash_id_trace and block_size is not None:
        raise UsageError("a block-hash trace has its own block size: use --trace-block-size, not --block-size")
    bs = stream.block_size
    try:
        if compute_model is not None:
            from kvcache.engine.capacity import parse_memory
            from kvcache.engine.compute import compute_pool_blocks

            if kv_blocks is not None and kv_memory is not None:
                raise ConfigError("give either --kv-blocks or --kv-memory, not both")
            num_blocks = compute_pool_blocks(compute_model, bs, kv_blocks, parse_memory(kv_memory) if kv_memory else None)
        else:
            num_blocks = resolve_num_blocks(bs, kv_blocks, kv_memory, model_shape, kv_dtype)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    config = CacheConfig(block_size=bs, num_blocks=num_blocks, hash_algo=hash_algo.value, free_order=free_order.value)
    latency = None
    sched_info: dict[str, str] | None = None
    if scheduled:
        from kvcache.analyzers.latency import LatencyReport
        from kvcache.engine.cost_model import RooflineCostModel
        from kvcache.engine.sched_config import SchedulerConfig
        from kvcache.engine.scheduler import Scheduler

        if provider_ttl is not None:
            raise UsageError("--provider-ttl applies to hosted providers, not vllm")
        shape_name = model_shape or "llama-3.1-8b"
        try:
            sched_config = SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                                           enable_chunked_prefill=chunked_prefill)
            cost_model = RooflineCostModel(shape_name, hardware)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        sched_info = {"shape": shape_name, "hardware": cost_model.hardware.name}
        executor = None
        if compute_model is not None:
            from kvcache.engine.executor import ModelExecutor

            executor = ModelExecutor(compute_model.loaded, num_blocks, bs, verify=verify, impl=attn_impl.value)  # type: ignore[arg-type]
        replayer = Scheduler(config, sched_config, cost_model, executor)
        latency = LatencyReport(cost_model)
    elif provider is ProviderChoice.vllm:
        if provider_ttl is not None:
            raise UsageError("--provider-ttl applies to hosted providers, not vllm")
        for flag, used in (("--max-num-batched-tokens", max_num_batched_tokens != 8192), ("--max-num-seqs", max_num_seqs != 256),
                           ("--no-chunked-prefill", not chunked_prefill), ("--hardware", hardware != "h100")):
            if used:
                raise UsageError(f"{flag} configures the scheduler; it does not apply with --sequential")
        replayer = SequentialReplayer(config)
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
                if latency is not None:
                    latency.add(result)
                if writer is not None:
                    writer.write(result)
                advance(stream.bytes_read - seen)
                seen = stream.bytes_read
    finally:
        if writer is not None:
            writer.close()
    scheduler_section = compute_section = verify_section = None
    if latency is not None:
        shape = latency.cost_model.shape
        scheduler_section = latency.section(
            replayer.stats,
            config={"max_num_batched_tokens": max_num_batched_tokens, "max_num_seqs": max_num_seqs,
                    "chunked_prefill": chunked_prefill, "cost_model_shape": shape.name,
                    "hardware": latency.cost_model.hardware.name},
            block_bytes=shape.bytes_per_block(bs),
        )
        if replayer.executor is not None:
            ex = replayer.executor
            compute_section = {"model": compute_model.name, "source": str(compute_model.loaded.source),
                               "tokenizer": compute_model.tokenizer_name or "the trace's (ids folded into the model's vocabulary)",
                               "kv_pool_blocks": num_blocks, "attn_impl": attn_impl.value, **ex.stats.to_dict()}
            if verify:
                verify_section = {"requests": ex.stats.verify_requests, "max_rel_err": ex.stats.verify_max_rel_err,
                                  "worst_request": ex.stats.verify_worst_request}
    stats = replayer.replay_stats if latency is not None else replayer.stats
    report = ReplayReport(
        trace=trace, input_format=stream.format_label, config=config, hit_cap=stream.hit_cap,
        hit_rates=hit_rates, stats=stats,
        skipped=[{"line": s.line, "reason": s.reason, **({"path": s.path} if s.path else {})} for s in stream.skipped],
        notes=notes_for(stream.format or "", stream.hit_cap, sorted(stream.tokenizers), provider.value,
                        bool(getattr(replayer, "breakpoint_models", None)), sched_info,
                        compute_model.name if compute_model is not None else None),
        implementation=replayer.implementation, billing=billing, provider=provider.value,
        warnings=stream.warnings, scheduler=scheduler_section, compute=compute_section, verify=verify_section,
    )
    for message in stream.warnings:
        out.warn(message)
    if report.skipped:
        first = ", ".join(f"line {s['line']}: {s['reason']}" for s in report.skipped[:3])
        out.warn(f"skipped {len(report.skipped)} malformed line(s) ({first}{', ...' if len(report.skipped) > 3 else ''})")
    out.replay(report.to_dict(), top=top)
