"""`kvcache bench` end to end on CPU, with tiny shapes and few repeats."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvcache.cli.main import app

runner = CliRunner()

TINY = ["bench", "--context", "16,32", "--batch", "2", "--heads", "4", "--gqa", "2", "--head-dim", "16",
        "--block-size", "8", "--prefill-len", "4", "--repeat", "2", "--warmup", "1", "--copy-mib", "1",
        "--quiet"]
ENV_FIELDS = {"torch", "cuda", "driver", "device", "cpu", "git_sha", "argv", "repro_command"}
RESULT_FIELDS = {"op", "impl", "batch", "context", "block_size", "heads_q", "heads_kv", "head_dim", "dtype",
                 "median_ms", "p20_ms", "p80_ms", "gbps", "pct_of_ceiling", "tflops", "max_rel_err",
                 "energy_j_per_token"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*extra: str, env: dict | None = None):
    return runner.invoke(app, [*TINY, *extra], env=env)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """One tiny measured run, saved as JSON, shared by the tests that only read it."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("bench") / "run.json"
    r = bench("--op", "decode", "--output", str(path))
    assert r.exit_code == 0, r.output
    return path


def timed(report: dict) -> list[dict]:
    return [r for r in report["results"] if r["status"] == "ok"]


# ------------------------------------------------------------------ the run
def test_tiny_sweep_writes_json_with_exactly_the_fields():
    pytest.importorskip("torch")
    r = bench("-f", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) == {"env", "ceiling", "results"}
    assert ENV_FIELDS <= set(data["env"])
    assert data["env"]["repro_command"].startswith("kvcache bench --op decode,prefill --context 16,32")
    assert data["ceiling"]["copy_gbps"] > 0
    rows = data["results"]
    assert all(RESULT_FIELDS <= set(row) for row in rows)
    ok = timed(data)
    assert {(row["op"], row["impl"]) for row in ok} >= {
        (op, impl) for op in ("decode", "prefill") for impl in ("torch", "dense_sdpa", "dense_grouped")}
    for row in ok:
        assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
        assert row["gbps"] > 0 and row["pct_of_ceiling"] > 0 and row["tflops"] > 0
        assert row["max_rel_err"] <= 1e-5 and row["energy_j_per_token"] is None
        assert (row["heads_q"], row["heads_kv"], row["head_dim"], row["dtype"]) == (4, 2, 16, "fp32")
        assert row["q_len"] == (1 if row["op"] == "decode" else 4)
    assert data["env"]["power_measured"] is False and data["env"]["power_reason"]


def test_table_says_power_was_not_measured():
    pytest.importorskip("torch")
    r = bench("--op", "decode", "--context", "16", env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "dense_grouped" in r.stdout and "copy ceiling" in r.stdout
    assert "power was not measured" in r.stdout


def test_a_broken_implementation_is_reported_failed_and_exits_1(monkeypatch):
    pytest.importorskip("torch")
    from kvcache import kernels
    from kvcache.kernels import bench_run

    monkeypatch.setitem(bench_run.EXTRA_IMPLS, "broken",
                        lambda *args: kernels.paged_attention(*args, impl="torch") * 1.01)
    r = bench("--op", "decode", "-f", "json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)  # the results still come out
    broken = [row for row in data["results"] if row["impl"] == "broken"]
    assert len(broken) == 2 and all(row["status"] == "failed" and row["median_ms"] is None for row in broken)
    assert all(row["max_rel_err"] > 1e-3 for row in broken)
    assert [row["status"] for row in data["results"] if row["impl"] == "torch"] == ["ok", "ok"]
    assert "failed the reference check" in r.stderr and "broken" in r.stderr and "Traceback" not in r.output


def test_gpu_without_a_cuda_device_exits_2_with_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = bench("--gpu")
    assert r.exit_code == 2
    assert "no usable CUDA device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_shape_preset_sets_the_heads():
    pytest.importorskip("torch")
    r = runner.invoke(app, ["bench", "--shape", "llama-3.2-1b", "--op", "decode", "--context", "16",
                            "--batch", "1", "--impl", "torch", "--repeat", "1", "--warmup", "0",
                            "--copy-mib", "1", "-f", "json"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)["results"]
    assert (row["heads_q"], row["heads_kv"], row["head_dim"]) == (32, 8, 64)


# ------------------------------------------------------------------ files
def test_csv_png_and_profile_files(tmp_path: Path, saved: Path):
    from kvcache.engine.hardware import load_hardware_file

    out = {k: tmp_path / f"out.{k}" for k in ("csv", "png", "json")}
    r = runner.invoke(app, ["bench", "--input", str(saved), "--csv", str(out["csv"]), "--plot", str(out["png"]),
                            "--save-profile", str(out["json"])])
    assert r.exit_code == 0, r.output
    assert out["png"].read_bytes()[:8] == PNG_MAGIC
    lines = out["csv"].read_text().splitlines()
    data = json.loads(saved.read_text())
    assert lines[0].startswith("op,impl,batch,context") and len(lines) == 1 + len(data["results"])
    hw = load_hardware_file(out["json"])
    assert hw.memory_bandwidth_gbps == pytest.approx(data["ceiling"]["copy_gbps"])
    assert hw.peak_tflops == pytest.approx(data["ceiling"]["matmul_tflops"])
    assert hw.source.startswith("measured by kvcache bench")


def test_csv_and_plot_from_a_live_run(tmp_path: Path):
    pytest.importorskip("torch")
    r = bench("--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "r.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC
    assert "prefill" in (tmp_path / "r.csv").read_text()


def test_replay_prices_its_clock_from_a_saved_profile(tmp_path: Path, saved: Path):
    profile = tmp_path / "hw.json"
    assert runner.invoke(app, ["bench", "--input", str(saved), "--save-profile", str(profile), "-q"]).exit_code == 0
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"request_id": "a", "prompt_token_ids": list(range(40)), "output_length": 2}) + "\n")
    r = runner.invoke(app, ["replay", str(trace), "--hardware", str(profile), "-f", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"]["scheduler"]["hardware"].startswith("bench-")


# ------------------------------------------------------------------ compare
def scaled(saved: Path, tmp_path: Path, factor: float) -> Path:
    data = json.loads(saved.read_text())
    for row in data["results"]:
        if row["median_ms"] is not None:
            row["median_ms"] *= factor
    path = tmp_path / f"baseline-{factor}.json"
    path.write_text(json.dumps(data))
    return path


def test_compare_flags_a_slowdown(tmp_path: Path, saved: Path):
    faster = scaled(saved, tmp_path, 0.5)  # the baseline ran twice as fast
    r = runner.invoke(app, ["bench", "--input", str(saved), "--compare", str(faster)], env={"COLUMNS": "200"})
    assert r.exit_code == 1
    assert "regressions against" in r.stdout and "2.00x" in r.stdout
    assert "slower than 1.10x the baseline" in r.stderr


def test_compare_passes_within_tolerance(tmp_path: Path, saved: Path):
    r = runner.invoke(app, ["bench", "--input", str(saved), "--compare", str(scaled(saved, tmp_path, 0.95))])
    assert r.exit_code == 0, r.output
    assert "none slower than 1.10x" in r.stdout
    loose = runner.invoke(app, ["bench", "--input", str(saved), "--compare", str(scaled(saved, tmp_path, 0.5)),
                                "--max-slowdown", "2.5", "-f", "json"])
    assert loose.exit_code == 0, loose.output
    cmp = json.loads(loose.stdout)["compare"]
    assert cmp["passed"] and cmp["regressions"] == [] and cmp["within_tolerance"] == len(timed(json.loads(saved.read_text())))


def test_compare_after_a_live_run(tmp_path: Path, saved: Path):
    much_faster = scaled(saved, tmp_path, 1e-4)
    much_slower = scaled(saved, tmp_path, 1e4)
    assert bench("--op", "decode", "--compare", str(much_faster)).exit_code == 1
    r = bench("--op", "decode", "--compare", str(much_slower))
    assert r.exit_code == 0, r.output
    assert "improvements against" in r.stdout


def test_compare_lists_shapes_missing_on_either_side(tmp_path: Path, saved: Path):
    data = json.loads(saved.read_text())
    data["results"][-1]["context"] = 99999
    base = tmp_path / "b.json"
    base.write_text(json.dumps(data))
    r = runner.invoke(app, ["bench", "--input", str(saved), "--compare", str(base)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "missing in this run:" in r.stdout and "ctx=99999" in r.stdout
    assert "new in this run" in r.stdout


@pytest.mark.parametrize("content", [None, "{not json", '{"results": 3}'])
def test_a_bad_baseline_is_one_line_and_exit_1(tmp_path: Path, content: str | None):
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    r = runner.invoke(app, ["bench", "--compare", str(path), "--op", "decode"])
    assert r.exit_code == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "base.json" in r.stderr and "Traceback" not in r.output


# ------------------------------------------------------------------ usage and environment
@pytest.mark.parametrize("args", [
    ["--gqa", "3"],  # does not divide 4 heads
    ["--op", "encode"],
    ["--context", "1k,abc"],
    ["--dtype", "fp8"],
    ["--impl", "nope"],
    ["--shape", "llama-3.1-8b"],  # with --gqa/--heads from TINY
    ["--max-slowdown", "0.9"],
])
def test_usage_errors_exit_2(args: list[str]):
    pytest.importorskip("torch")
    r = bench(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_unknown_model_shape_is_a_usage_error():
    pytest.importorskip("torch")
    r = runner.invoke(app, ["bench", "--shape", "gpt-9"])
    assert r.exit_code == 2 and "llama-3.1-8b" in r.stderr


def test_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    r = bench()
    assert r.exit_code == 1
    assert "pip install 'kvcache[torch]'" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("argv", [["bench", "--help"], ["--help"]])
def test_help_does_not_import_torch(argv: list[str]):
    code = (
        "import sys\n"
        "from kvcache.cli.main import app\n"
        "try:\n"
        f"    app({argv!r}, prog_name='kvcache')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in r.stderr, r.stderr
    assert "bench" in r.stdout


def test_power_monitor_reports_the_monitors_reason(monkeypatch):
    from kvcache.cli import bench as bench_cli

    class Monitor:
        def __init__(self, available: bool) -> None:
            self.available = available
            self.reason = None if available else "NVML: driver not loaded"

        def info(self) -> dict:
            return {"driver_version": "580.65", "name": "fake"}

    opened = []
    fake = types.ModuleType("kvcache.analyzers.gpu_monitor")
    fake.open_monitor = lambda cuda_device=0, period_s=0.05: opened.append((cuda_device, period_s)) or Monitor(flag)
    monkeypatch.setitem(sys.modules, "kvcache.analyzers.gpu_monitor", fake)
    flag = False
    mon, power = bench_cli.power_monitor(True, 1)
    assert mon is None and power == {"measured": False, "reason": "NVML: driver not loaded"}
    flag = True
    mon, power = bench_cli.power_monitor(True, 1)
    assert mon is not None and power["measured"] and power["monitor"]["driver_version"] == "580.65"
    assert opened == [(1, 0.05), (1, 0.05)]
    mon, power = bench_cli.power_monitor(False)
    assert mon is None and "--gpu" in power["reason"]
    monkeypatch.setitem(sys.modules, "kvcache.analyzers.gpu_monitor", None)
    mon, power = bench_cli.power_monitor(True)
    assert mon is None and "not available" in power["reason"]


def test_power_monitor_from_the_real_nvml_module_says_why_not():
    from kvcache.cli import bench as bench_cli

    pytest.importorskip("kvcache.analyzers.gpu_monitor")
    mon, power = bench_cli.power_monitor(True, 0)
    if mon is not None:
        pytest.skip("NVML measures power here")
    assert power["measured"] is False and "NVML" in power["reason"]


def test_progress_bar_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    import io

    from kvcache.cli import bench as bench_cli

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for quiet, tty, shown in [(False, True, True), (True, True, False), (False, False, False)]:
        err = Terminal() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        with bench_cli.progress(quiet, 4) as advance:
            advance(1)
            advance(3)
        assert ("4/4" in err.getvalue()) is shown, (quiet, tty)
