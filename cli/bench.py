"""``kvcache bench``: time the paged-attention kernels against dense attention.

Parses the sweep, hands it to ``kvcache.kernels.bench_run`` (torch), builds
the report with ``kvcache.analyzers.bench_report`` and renders it; writes
JSON, CSV, a plot and a hardware profile on request; compares with a baseline.
"""

from __future__ import annotations

import re
import sys
import time
from contextlib import contextmanager
from enum import Enum
from typing import Any, Iterator

import typer

from kvcache.cli.errors import UsageError, handle_errors

# Defaults per device: small on a laptop CPU, larger on a GPU.
CPU_DEFAULTS = {"context": "256,1024", "batch": "2", "dtype": "fp32", "prefill_len": 128,
                "repeat": 10, "warmup": 2, "copy_mib": 1024, "matmul_n": 1024, "matmul_dtype": "float32"}
GPU_DEFAULTS = {"context": "1024,4096,16384", "batch": "8", "dtype": "bf16", "prefill_len": 0,
                "repeat": 20, "warmup": 3, "copy_mib": 1024, "matmul_n": 8192, "matmul_dtype": "bfloat16"}


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def int_list(flag: str, text: str) -> list[int]:
    """``"1024,4k"`` -> ``[1024, 4096]``; positive integers, ``k`` = x1024."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", part)
        value = int(m.group(1)) * (1024 if m.group(2) else 1) if m else 0
        if value < 1:
            raise UsageError(f"{flag} expects positive integers separated by commas (e.g. 1024,4k), got {text!r}")
        out.append(value)
    return list(dict.fromkeys(out))


def str_list(flag: str, text: str, choices: tuple[str, ...] | None = None) -> list[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise UsageError(f"{flag} is empty")
    bad = [p for p in items if choices is not None and p not in choices]
    if bad:
        raise UsageError(f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(choices or ())}")
    return list(dict.fromkeys(items))


def model_heads(name: str) -> tuple[int, int, int]:
    """(Hq, Hkv, D) of a model in engine/data/model_shapes.json."""
    from kvcache.engine.capacity import _shape_data, get_model_shape
    from kvcache.engine.errors import ConfigError

    try:
        shape = get_model_shape(name)
    except ConfigError as e:
        raise UsageError(f"--shape: {e}") from None
    heads = _shape_data()["models"][shape.name].get("num_attention_heads")
    if not heads:
        raise UsageError(f"--shape {name}: model_shapes.json has no num_attention_heads for it")
    return int(heads), shape.num_key_value_heads, shape.head_dim


def power_monitor(gpu: bool, cuda_device: int = 0) -> tuple[Any, dict[str, Any]]:
    """The NVML monitor (analyzers/gpu_monitor.py) when it can measure, and the power status."""
    if not gpu:
        return None, {"measured": False, "reason": "power is measured only on a GPU (--gpu, NVML)"}
    try:
        from kvcache.analyzers.gpu_monitor import open_monitor
    except ImportError as e:
        return None, {"measured": False, "reason": f"the NVML monitor is not available ({e})"}
    monitor = open_monitor(cuda_device=cuda_device, period_s=0.05)
    if not monitor.available:
        return None, {"measured": False, "reason": monitor.reason or "NVML is not available"}
    return monitor, {"measured": True, "reason": None, "monitor": monitor.info()}


@contextmanager
def progress(quiet: bool, total: int) -> Iterator[Any]:
    """A rich bar on stderr counting (shape, implementation) steps; off when quiet or not a TTY."""
    if quiet or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bench", total=total)
        yield lambda n=1: bar.advance(task, n)


def save_profile(report: dict[str, Any], path: str) -> None:
    """Write an engine/hardware.py JSON profile from the ceiling (matmul TFLOP/s, copy GB/s)."""
    import json
    from dataclasses import asdict

    from kvcache.engine.errors import ConfigError, KVCacheError
    from kvcache.engine.hardware import Hardware

    env, ceil = report["env"], report["ceiling"]
    if not ceil.get("matmul_tflops") or not ceil.get("copy_gbps"):
        raise KVCacheError("--save-profile: the results hold no matmul_tflops and copy_gbps ceiling")
    device = str(env.get("device") or "cpu")
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")[:40] or "device"
    try:
        hw = Hardware(
            name=f"bench-{slug}", peak_tflops=float(ceil["matmul_tflops"]),
            memory_bandwidth_gbps=float(ceil["copy_gbps"]), memory_gb=env.get("device_memory_gb"),
            source=(f"measured by kvcache bench on {device}: median {ceil.get('matmul_dtype')} matmul "
                    f"n={ceil.get('matmul_n')}, median copy_ of {ceil.get('copy_mib')} MiB (read + write); "
                    f"torch {env.get('torch')}, git {env.get('git_sha')}"),
            as_of=time.strftime("%Y-%m-%d"),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--save-profile: {e}") from None
    entry = {**asdict(hw), "repro_command": env.get("repro_command")}
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, indent=2) + "\n")
    except OSError as e:
        raise KVCacheError(f"{path}: cannot write: {e.strerror or e}") from None


def _repro(gpu: bool, ops: list[str], impls: list[str] | None, contexts: list[int], block_sizes: list[int],
           batches: list[int], shape: str | None, heads: int, gqas: list[int], head_dim: int,
           dtypes: list[str], prefill_len: int, repeat: int, warmup: int, copy_mib: int, seed: int,
           refcheck: bool, cuda_graphs: bool, energy_s: float, threads: int | None) -> str:
    def j(xs: list[Any]) -> str:
        return ",".join(str(x) for x in xs)

    parts = ["kvcache bench"] + (["--gpu"] if gpu else [])
    parts += [f"--op {j(ops)}"] + ([f"--impl {j(impls)}"] if impls else [])
    parts += [f"--context {j(contexts)}", f"--block-size {j(block_sizes)}", f"--batch {j(batches)}"]
    parts += [f"--shape {shape}"] if shape else [f"--heads {heads}", f"--gqa {j(gqas)}", f"--head-dim {head_dim}"]
    parts += [f"--dtype {j(dtypes)}", f"--prefill-len {prefill_len}", f"--repeat {repeat}",
              f"--warmup {warmup}", f"--copy-mib {copy_mib}", f"--seed {seed}"]
    parts += [] if refcheck else ["--no-refcheck"]
    if gpu:
        parts += [f"--energy-seconds {energy_s:g}"] + ([] if cuda_graphs else ["--no-cuda-graphs"])
    parts += [f"--threads {threads}"] if threads else []
    return " ".join(parts)


@handle_errors
def bench(
    gpu: bool = typer.Option(False, "--gpu", help="Run on the CUDA device (exit 2 when there is none); adds NVML power and energy."),
    op: str = typer.Option("decode,prefill", "--op", help="Comma list of decode, prefill."),
    impl: str | None = typer.Option(None, "--impl", help="Comma list of implementations: torch, triton, flex, flashinfer, flash_attn, dense_sdpa, dense_grouped. Default: all but flex."),
    shape: str | None = typer.Option(None, "--shape", help="Take Hq, Hkv and head_dim from a model in engine/data/model_shapes.json, e.g. llama-3.1-8b."),
    context: str | None = typer.Option(None, "--context", help="Context lengths (tokens per sequence), e.g. 1024,4k. Default: 256,1024 on CPU; 1024,4096,16384 on GPU."),
    block_size: str = typer.Option("16", "--block-size", help="KV block sizes (tokens), comma list."),
    batch: str | None = typer.Option(None, "--batch", help="Sequences per call, comma list. Default: 2 on CPU, 8 on GPU."),
    gqa: str | None = typer.Option(None, "--gqa", help="Query heads per KV head (Hkv = heads / gqa), comma list. Default 4."),
    heads: int | None = typer.Option(None, "--heads", min=1, help="Query heads Hq. Default 32."),
    head_dim: int | None = typer.Option(None, "--head-dim", min=1, help="Head dimension D. Default 128."),
    dtype: str | None = typer.Option(None, "--dtype", help="fp32, fp16, bf16 (comma list). Default: fp32 on CPU, bf16 on GPU."),
    prefill_len: int | None = typer.Option(None, "--prefill-len", min=0, help="Prefill: new tokens per sequence at the end of its context; 0 = the whole context. Default: 128 on CPU, 0 on GPU."),
    repeat: int | None = typer.Option(None, "--repeat", "-n", min=1, help="Timed runs per implementation and shape (median, p20, p80). Default: 10 on CPU, 20 on GPU."),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="Untimed runs first. Default: 2 on CPU, 3 on GPU."),
    refcheck: bool = typer.Option(True, "--refcheck/--no-refcheck", help="Check every implementation against the float64 reference before timing it."),
    copy_mib: int | None = typer.Option(None, "--copy-mib", min=1, help="Size of the copy_ that measures the bandwidth ceiling. Default 1024 (1 GiB)."),
    energy_seconds: float = typer.Option(1.0, "--energy-seconds", min=0.1, help="--gpu: run each implementation at least this long inside one NVML energy window."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="--gpu: replay decode steps from a CUDA graph when the call can be captured."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch.set_num_threads for CPU runs (default: torch's)."),
    seed: int = typer.Option(0, "--seed", help="Random inputs' seed."),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table for people, json for machines."),
    output: str | None = typer.Option(None, "--output", "-o", metavar="FILE", help="Also write the JSON results to FILE (a baseline for --compare)."),
    csv_path: str | None = typer.Option(None, "--csv", metavar="FILE", help="Write one CSV line per result."),
    plot: str | None = typer.Option(None, "--plot", metavar="FILE.png", help="Plot GB/s against context length per implementation, with the copy ceiling."),
    save_profile_path: str | None = typer.Option(None, "--save-profile", metavar="FILE.json", help="Write a hardware profile (matmul TFLOP/s, copy GB/s) for kvcache replay --hardware FILE.json."),
    compare_path: str | None = typer.Option(None, "--compare", metavar="BASELINE.json", help="Compare medians with a saved --format json run; exit 1 on a regression."),
    max_slowdown: float = typer.Option(1.10, "--max-slowdown", min=1.0, help="--compare: largest allowed current/baseline median ratio."),
    input_path: str | None = typer.Option(None, "--input", metavar="FILE", help="Read results from a saved JSON run instead of measuring (to re-render, plot or compare)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar on stderr."),
) -> None:
    """Time paged attention against dense attention, and the copy ceiling, in one run.

    Each implementation (torch, triton on a GPU, flashinfer and flash_attn
    when installed; dense SDPA and a grouped matmul over contiguous K/V) is
    first checked against the float64 reference, then timed: warm-up, then
    --repeat runs, median and p20/p80. GB/s counts the bytes a kernel must
    move; % ceil divides it by a large copy_ measured in the same run. With
    --gpu, NVML meters energy per step and per token. A failed reference check
    or a --compare regression exits 1.
    """
    from kvcache.analyzers.bench_report import build_report, environment, failed_rows, load_report
    from kvcache.engine.errors import KVCacheError
    from kvcache.engine.hardware import TORCH_HINT

    baseline = load_report(compare_path) if compare_path else None
    if input_path is not None:
        report = load_report(input_path)
    else:
        try:
            import torch
        except ImportError:
            raise KVCacheError(f"kvcache bench needs torch: {TORCH_HINT}") from None
        from kvcache.kernels.bench_cases import DTYPES, OPS, sweep_shapes
        from kvcache.kernels.bench_impls import KNOWN_IMPLS
        from kvcache.kernels.bench_run import EXTRA_IMPLS, BenchConfig, run_bench, total_steps
        from kvcache.kernels.timing import device_info

        if gpu and not torch.cuda.is_available():
            raise UsageError(f"--gpu: no usable CUDA device (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False)")
        d = GPU_DEFAULTS if gpu else CPU_DEFAULTS
        ops = str_list("--op", op, OPS)
        impls = str_list("--impl", impl, KNOWN_IMPLS + tuple(EXTRA_IMPLS)) if impl else None
        contexts = int_list("--context", context or d["context"])
        block_sizes = int_list("--block-size", block_size)
        batches = int_list("--batch", batch or d["batch"])
        dtypes = str_list("--dtype", dtype or d["dtype"], tuple(DTYPES))
        if shape is not None:
            if gqa is not None or heads is not None or head_dim is not None:
                raise UsageError("--shape sets the heads and head_dim; drop --gqa, --heads and --head-dim")
            hq, hkv, dim = model_heads(shape)
            head_pairs, gqas = [(hq, hkv)], [hq // hkv]
        else:
            hq, dim = heads or 32, head_dim or 128
            gqas = int_list("--gqa", gqa or "4")
            bad = [g for g in gqas if hq % g]
            if bad:
                raise UsageError(f"--gqa {','.join(map(str, bad))} does not divide --heads {hq}")
            head_pairs = [(hq, hq // g) for g in gqas]
        p_len = d["prefill_len"] if prefill_len is None else prefill_len
        n_rep, n_warm = repeat or d["repeat"], d["warmup"] if warmup is None else warmup
        mib = copy_mib or d["copy_mib"]
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if gpu else "cpu"
        config = BenchConfig(
            shapes=sweep_shapes(ops, dtypes, batches, block_sizes, head_pairs, dim, contexts, p_len),
            device=device, impls=impls, warmup=n_warm, repeat=n_rep, refcheck=refcheck, seed=seed,
            copy_mib=mib, matmul_n=d["matmul_n"], matmul_dtype=d["matmul_dtype"],
            cuda_graphs=cuda_graphs, energy_s=energy_seconds,
        )
        repro = _repro(gpu, ops, impls, contexts, block_sizes, batches, shape, hq, gqas, dim, dtypes, p_len,
                       n_rep, n_warm, mib, seed, refcheck, cuda_graphs, energy_seconds, threads)
        monitor, power = power_monitor(gpu, torch.cuda.current_device() if gpu else 0)
        if monitor is not None:
            monitor.start()
        try:
            with progress(quiet, total_steps(config)) as advance:
                ceiling, results = run_bench(config, monitor=monitor, advance=advance)
        finally:
            if monitor is not None:
                monitor.stop()
        env = environment(device_info(device), sys.argv, repro, power)
        report = build_report(env, ceiling, [r.as_row() for r in results])

    comparison = None
    if baseline is not None:
        from kvcache.analyzers.bench_compare import compare

        comparison = compare(report, baseline, max_slowdown)
    _render(report, comparison, compare_path, output_format)
    _write_files(report, output, csv_path, plot, save_profile_path, quiet)
    failed = failed_rows(report)
    problems = []
    if failed:
        names = ", ".join(sorted({r["impl"] for r in failed}))
        problems.append(f"{len(failed)} result(s) failed the reference check or raised ({names})")
    if comparison is not None and not comparison.passed:
        problems.append(f"{len(comparison.regressions)} shape(s) slower than {max_slowdown:.2f}x the baseline "
                        f"{compare_path}")
    if problems:
        raise KVCacheError("; ".join(problems))


def _render(report: dict[str, Any], comparison: Any, baseline_name: str | None, fmt: OutputFormat) -> None:
    import json

    if fmt is OutputFormat.json:
        data = dict(report)
        if comparison is not None:
            data["compare"] = {"baseline": baseline_name, **comparison.as_dict()}
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    from rich.console import Console

    from kvcache.analyzers.bench_report import render_table

    console = Console()
    render_table(report, console)
    if comparison is not None:
        from kvcache.analyzers.bench_compare import render_compare

        render_compare(comparison, baseline_name or "baseline", console)


def _write_files(report: dict[str, Any], output: str | None, csv_path: str | None, plot: str | None,
                 profile: str | None, quiet: bool) -> None:
    from kvcache.analyzers.bench_report import write_csv, write_json

    done = []
    if output:
        write_json(report, output)
        done.append(output)
    if csv_path:
        write_csv(report, csv_path)
        done.append(csv_path)
    if plot:
        from kvcache.analyzers.bench_plot import plot_bandwidth

        plot_bandwidth(report, plot)
        done.append(plot)
    if profile:
        save_profile(report, profile)
        done.append(profile)
    if done and not quiet:
        print(f"kvcache: wrote {', '.join(done)}", file=sys.stderr)
