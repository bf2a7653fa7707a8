"""The bench report: derived rates, energy, files (analyzers/bench_report.py). No torch needed."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from kvcache.analyzers import bench_report
from kvcache.analyzers.bench_report import (
    ENV_FIELDS,
    RESULT_FIELDS,
    build_report,
    environment,
    load_report,
    render_table,
    write_csv,
)
from kvcache.engine.errors import KVCacheError


def raw(impl: str = "torch", median_ms: float | None = 2.0, **kw) -> dict:
    row = {"op": "decode", "impl": impl, "batch": 2, "context": 1024, "block_size": 16, "heads_q": 32,
           "heads_kv": 8, "head_dim": 128, "dtype": "fp32", "q_len": 1, "status": "ok",
           "median_ms": median_ms, "p20_ms": median_ms and median_ms * 0.9,
           "p80_ms": median_ms and median_ms * 1.1, "max_rel_err": 1e-7, "bytes_moved": 4_000_000,
           "flops": 2_000_000_000, "tokens": 2, "cuda_graph": False, "notes": [],
           "energy_window": None, "energy_steps": 0}
    row.update(kw)
    return row


class Window:
    seconds, method, avg_power_w, sm_clock_mhz, throttle_reasons = 1.2, "counter", 400.0, 1980, ("power",)
    note = "window too short"

    def __init__(self, energy_j: float | None) -> None:
        self.energy_j = energy_j


def test_rates_follow_bytes_flops_and_the_ceiling():
    report = build_report({}, {"copy_gbps": 10.0}, [raw()])
    r = report["results"][0]
    assert set(report) == {"env", "ceiling", "results"}
    assert list(r)[: len(RESULT_FIELDS)] == list(RESULT_FIELDS)
    assert r["gbps"] == pytest.approx(4_000_000 / 2e-3 / 1e9)  # 2.0 GB/s
    assert r["pct_of_ceiling"] == pytest.approx(20.0)
    assert r["tflops"] == pytest.approx(2e9 / 2e-3 / 1e12)  # 1.0
    assert r["energy_j_per_token"] is None and r["energy_j_per_step"] is None and r["power_w"] is None


def test_failed_rows_have_no_rates_and_infinite_error_is_null():
    r = build_report({}, {"copy_gbps": 10.0}, [raw(median_ms=None, status="failed", max_rel_err=float("inf"))])
    row = r["results"][0]
    assert row["gbps"] is None and row["tflops"] is None and row["max_rel_err"] is None
    json.dumps(r, allow_nan=False)  # valid JSON: no Infinity


def test_energy_per_step_and_token(monkeypatch):
    monkeypatch.setitem(sys.modules, "kvcache.analyzers.energy", None)  # the fallback sum
    r = build_report({}, {"copy_gbps": 10.0}, [raw(energy_window=Window(60.0), energy_steps=300)])["results"][0]
    assert r["energy_j_per_step"] == pytest.approx(0.2)
    assert r["energy_j_per_token"] == pytest.approx(0.1)  # 2 tokens a decode step
    assert r["power_w"] == 400.0 and r["sm_clock_mhz"] == 1980 and r["throttle_reasons"] == ["power"]
    assert (r["energy_method"], r["energy_window_s"], r["energy_steps"]) == ("counter", 1.2, 300)
    unmeasured = build_report({}, {}, [raw(energy_window=Window(None), energy_steps=10)])["results"][0]
    assert unmeasured["energy_j_per_token"] is None
    assert unmeasured["notes"] == ["energy not measured: window too short"]


def test_energy_from_the_nvml_engineers_window():
    energy = pytest.importorskip("kvcache.analyzers.energy")
    w = energy.EnergyWindow(start=0.0, end=1.5, seconds=1.5, energy_j=90.0, method="counter",
                            avg_power_w=60.0, sm_clock_mhz=1980.0, throttle_reasons=["sw_power_cap"])
    r = build_report({}, {}, [raw(energy_window=w, energy_steps=100)])["results"][0]
    assert r["energy_j_per_step"] == pytest.approx(0.9) and r["energy_j_per_token"] == pytest.approx(0.45)
    assert r["throttle_reasons"] == ["sw_power_cap"] and r["power_w"] == 60.0
    null = energy.EnergyWindow(start=0.0, end=1.0, seconds=1.0, note="not measured: NVML not available")
    r = build_report({}, {}, [raw(energy_window=null, energy_steps=100)])["results"][0]
    assert r["energy_j_per_token"] is None and "NVML not available" in r["notes"][0]


def test_energy_uses_the_energy_module_when_present(monkeypatch):
    calls = []
    fake = types.ModuleType("kvcache.analyzers.energy")
    fake.per_unit = lambda window, units: calls.append(units) or 7.0
    monkeypatch.setitem(sys.modules, "kvcache.analyzers.energy", fake)
    r = build_report({}, {}, [raw(energy_window=Window(60.0), energy_steps=300)])["results"][0]
    assert calls == [300, 600] and r["energy_j_per_token"] == 7.0


def test_environment_has_the_required_keys_and_the_power_reason():
    info = {"torch": "2.13", "cuda": None, "device": "cpu x", "cpu": "cpu x", "torch_threads": 2}
    env = environment(info, ["kvcache", "bench"], "kvcache bench --op decode",
                      {"measured": False, "reason": "no NVML"})
    assert list(env)[: len(ENV_FIELDS)] == list(ENV_FIELDS)
    assert env["repro_command"] == "kvcache bench --op decode" and env["torch_threads"] == 2
    assert env["power_measured"] is False and env["power_reason"] == "no NVML"
    gpu = environment(info, [], "", {"measured": True, "monitor": {"driver_version": "580.1"}})
    assert gpu["driver"] == "580.1" and gpu["power_monitor"] == {"driver_version": "580.1"}


def test_csv_has_one_line_per_result(tmp_path: Path):
    report = build_report({}, {"copy_gbps": 10.0}, [raw(), raw("dense_sdpa", 1.0, notes=["a", "b"])])
    write_csv(report, tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["impl"] for r in rows] == ["torch", "dense_sdpa"]
    assert float(rows[1]["gbps"]) == pytest.approx(4.0) and rows[1]["notes"] == "a; b"
    assert rows[0]["energy_j_per_token"] == ""


@pytest.mark.parametrize("text,msg", [
    ("{", "not valid JSON"),
    ("[]", "'results' list"),
    ('{"results": [{"op": "decode"}]}', "lacks impl"),
    ('{"results": [{"op": "decode", "impl": "t", "batch": 1, "context": 2, "median_ms": "fast"}]}', "median_ms"),
])
def test_bad_results_files_are_one_line_errors(tmp_path: Path, text: str, msg: str):
    p = tmp_path / "b.json"
    p.write_text(text)
    with pytest.raises(KVCacheError, match=msg):
        load_report(p)
    with pytest.raises(KVCacheError, match="cannot read"):
        load_report(tmp_path / "missing.json")


def test_table_shows_failures_skips_and_the_power_reason():
    from rich.console import Console

    env = {"device": "cpu x", "power_measured": False, "power_reason": "no NVML here"}
    report = build_report(env, {"copy_gbps": 10.0, "copy_mib": 4}, [
        raw(), raw("broken", None, status="failed", notes=["max rel err 1e-2 above"]),
        raw("triton", None, status="skipped", notes=["needs a GPU"]),
    ])
    console = Console(record=True, width=160)
    render_table(report, console)
    text = console.export_text()
    assert "FAILED" in text and "max rel err 1e-2 above" in text
    assert "triton skipped: needs a GPU" in text
    assert "power was not measured: no NVML here" in text
    assert "copy ceiling: 10.0 GB/s" in text


def test_git_sha_outside_a_checkout_is_none(tmp_path: Path):
    assert bench_report.git_sha(tmp_path) is None
