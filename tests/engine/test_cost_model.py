"""The roofline cost model and the hardware profiles.

Expected figures are worked by hand from each model's config.json (hidden 4096,
intermediate 14336, 32 layers, 32 heads, 8 KV heads, head_dim 128, vocab 128256
for Llama 3.1 8B) and from published parameter counts, not from running the code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from kvcache.engine.cost_model import (
    CostConfig,
    FixedStepCost,
    RooflineCostModel,
    StepWork,
    model_params,
)
from kvcache.engine.errors import ConfigError
from kvcache.engine.hardware import (
    CPU_MEASURED,
    Hardware,
    _hardware_data,
    get_hardware,
    hardware_names,
    load_hardware_file,
    measure_cpu,
)

BARE = CostConfig(mfu=1.0, mbu=1.0, step_overhead_s=0.0)


def work(*chunks: tuple[int, int, bool]) -> StepWork:
    w = StepWork()
    for start, n, samples in chunks:
        w.add_chunk(start, n, samples)
    return w


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize(
    ("model", "published"),
    [
        ("llama-3.1-8b", 8_030_261_248),  # safetensors total on the Hub
        ("llama-3.2-1b", 1_235_814_400),  # tied embeddings counted once
        ("qwen2.5-7b", 7_615_616_512),  # q/k/v biases included
        ("mixtral-8x7b", 46_702_792_704),  # all 8 experts stored
    ],
)
def test_parameter_counts_match_the_published_ones(model: str, published: int) -> None:
    assert model_params(model).total == published


def test_mixtral_uses_two_experts_per_token() -> None:
    p = model_params("mixtral-8x7b")
    # "12.9B active parameters": 2 of 8 experts, plus embedding and lm_head.
    assert p.body_active + 2 * p.embedding == 12_879_925_248


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="llama-3.1-8b"):
        model_params("gpt-5")


# ------------------------------------------------------------------ hand-computed steps
def test_decode_step_of_llama_8b_on_h100_by_hand() -> None:
    cm = RooflineCostModel("llama-3.1-8b", "h100-sxm", BARE)
    # One sequence decodes its 1001st token: start 1000, 1 new token, sampled.
    w = work((1000, 1, True))
    assert (w.num_tokens, w.num_seqs, w.num_sampled, w.context_tokens, w.attention_pairs) == (1, 1, 1, 1000, 1001)
    # Body params (all but embedding and lm_head): 8,030,261,248 - 2 x 525,336,576
    # = 6,979,588,096. FLOPs: 2 x body + 2 x lm_head (one sample)
    # + 4 x 32 layers x 32 heads x 128 x 1001 pairs.
    assert cm.flops(w) == 13_959_176_192 + 1_050_673_152 + 524_812_288
    # Bytes: (body + lm_head + one embedding row) x 2 bytes, plus KV of 1001 tokens
    # x 131,072 bytes (2 x 32 x 8 x 128 x 2).
    assert cm.bytes(w) == 15_009_857_536 + 131_203_072
    cost = cm.breakdown(w)
    assert cost.bound == "memory"
    assert cm.step_time(w) == pytest.approx(15_141_060_608 / 3.35e12)
    assert cost.compute_s == pytest.approx(15_534_661_632 / 989.5e12)


def test_prefill_step_of_llama_8b_on_h100_by_hand() -> None:
    cm = RooflineCostModel("llama-3.1-8b", "h100-sxm", CostConfig(mfu=0.5, mbu=1.0, step_overhead_s=0.003))
    w = work((0, 1000, True))
    # 2 x body x 1000 + lm_head once + attention over 1000 x 1001 / 2 causal pairs.
    flops = 13_959_176_192_000 + 1_050_673_152 + 524_288 * 500_500
    assert cm.flops(w) == flops
    assert cm.breakdown(w).bound == "compute"
    assert cm.step_time(w) == pytest.approx(flops / (989.5e12 * 0.5) + 0.003)


def test_prefill_flops_saved_by_hand() -> None:
    cm = RooflineCostModel("llama-3.1-8b", "h100-sxm", CostConfig(mfu=0.5))
    # A 16-token hit at the start of a prompt: 2 x body x 16 + attention 16 x 17 / 2 pairs.
    flops = 2 * 6_979_588_096 * 16 + 524_288 * 136
    assert cm.prefill_flops_saved(16) == pytest.approx(flops / (989.5e12 * 0.5))
    # The same 16 tokens after 100 cached ones also attend to those 100.
    flops_after = 2 * 6_979_588_096 * 16 + 524_288 * (16 * 100 + 136)
    assert cm.prefill_flops_saved(16, context=100) == pytest.approx(flops_after / (989.5e12 * 0.5))
    assert cm.prefill_flops_saved(0) == 0
    with pytest.raises(ValueError):
        cm.prefill_flops_saved(-1)


def test_prefill_scales_with_flops_and_decode_with_bytes() -> None:
    base = Hardware("x", 100.0, 1000.0, 80, "test", "2026-11-28")
    fast_compute = Hardware("x2f", 200.0, 1000.0, 80, "test", "2026-11-28")
    fast_memory = Hardware("x2b", 100.0, 2000.0, 80, "test", "2026-11-28")
    prefill = work((0, 4096, True))
    decode = work(*[(2000, 1, True)] * 8)
    t = {hw.name: RooflineCostModel("llama-3.1-8b", hw, BARE) for hw in (base, fast_compute, fast_memory)}
    # Prefill: twice the FLOP/s halves it; twice the bandwidth changes nothing.
    assert t["x2f"].step_time(prefill) == pytest.approx(t["x"].step_time(prefill) / 2)
    assert t["x2b"].step_time(prefill) == t["x"].step_time(prefill)
    # Decode: the other way round.
    assert t["x2b"].step_time(decode) == pytest.approx(t["x"].step_time(decode) / 2)
    assert t["x2f"].step_time(decode) == t["x"].step_time(decode)
    # A decode step's time grows with the KV it reads: 8 x 1000 more context tokens.
    longer = work(*[(3000, 1, True)] * 8)
    assert t["x"].step_time(longer) - t["x"].step_time(decode) == pytest.approx(8 * 1000 * 131_072 / 1000e9)


def test_fp8_kv_halves_the_kv_bytes() -> None:
    bf16 = RooflineCostModel("llama-3.1-8b", "h100", BARE)
    fp8 = RooflineCostModel("llama-3.1-8b", "h100", CostConfig(mfu=1.0, mbu=1.0, step_overhead_s=0.0, kv_dtype="fp8"))
    assert (bf16.kv_bytes_per_token, fp8.kv_bytes_per_token) == (131_072, 65_536)


def test_mixtral_decode_reads_only_the_experts_it_uses() -> None:
    cm = RooflineCostModel("mixtral-8x7b", "h100", BARE)
    one, many = work((0, 1, False)), work(*[(0, 1, False)] * 16)
    expert_bytes = 32 * 3 * 4096 * 14336 * 2  # one expert in every layer, bf16
    # 1 token touches 2 experts; 16 tokens touch (at most) all 8.
    assert cm.bytes(many) - cm.bytes(one) == 6 * expert_bytes + 15 * 4096 * 2 + 15 * cm.kv_bytes_per_token


def test_an_empty_step_costs_nothing() -> None:
    assert RooflineCostModel("llama-3.1-8b", "h100").step_time(StepWork()) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"mfu": 0}, {"mfu": 1.5}, {"mbu": -0.1}, {"step_overhead_s": -1}, {"kv_dtype": "int3"}, {"weight_dtype": "fp4"}],
)
def test_cost_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        CostConfig(**kwargs)


def test_fixed_step_cost_rejects_non_positive_steps() -> None:
    with pytest.raises(ConfigError):
        FixedStepCost(0)


# ------------------------------------------------------------------ hardware profiles
def test_every_hardware_entry_has_a_source_and_consistent_figures() -> None:
    data = _hardware_data()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["as_of"])
    assert len(data["hardware"]) >= 8
    for name, entry in data["hardware"].items():
        assert entry["source"].startswith("https://"), name
        assert entry["peak_tflops"] > 0 and entry["memory_bandwidth_gbps"] > 0 and entry["memory_gb"] > 0, name
        # The dense figure is the printed one or half the printed sparse one.
        printed = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", entry["datasheet_bf16"].replace(",", ""))}
        assert entry["peak_tflops"] in printed or 2 * entry["peak_tflops"] in printed, name
    for alias, target in data["aliases"].items():
        assert target in data["hardware"], alias


def test_known_profiles_by_name_and_alias() -> None:
    h100 = get_hardware("H100")
    assert h100 == get_hardware("h100-sxm")
    assert (h100.peak_tflops, h100.memory_bandwidth_gbps, h100.memory_gb) == (989.5, 3350.0, 80.0)
    assert h100.source == "https://www.nvidia.com/en-us/data-center/h100/"
    assert h100.ridge_point == pytest.approx(989.5e12 / 3.35e12)
    assert get_hardware("a100-40gb").memory_bandwidth_gbps == 1555.0
    assert "l40s" in hardware_names() and hardware_names()[-1] == CPU_MEASURED


def test_unknown_hardware_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        get_hardware("tpu-v9")
    for name in ("h100-sxm", "h200-sxm", "l4", "cpu-measured"):
        assert name in str(err.value)


def test_cpu_measured_needs_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'kvcache[torch]'")):
        get_hardware("cpu-measured")


def test_cpu_measured_profile_round_trips_through_a_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "cpu.json"
    hw = measure_cpu(save_to=path, matmul_n=256, copy_mib=8, repeats=2)
    assert hw.name == CPU_MEASURED and hw.peak_tflops > 0 and hw.memory_bandwidth_gbps > 0
    assert hw.source.startswith("measured: torch")
    assert load_hardware_file(path) == hw
    assert get_hardware(str(path)) == hw


def test_bad_hardware_files_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="cannot read"):
        get_hardware(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="broken.json:1"):
        load_hardware_file(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"peak_tflops": 10}))
    with pytest.raises(ConfigError, match="memory_bandwidth_gbps"):
        load_hardware_file(partial)
    ok = tmp_path / "mine.json"
    ok.write_text(json.dumps({"peak_tflops": 10, "memory_bandwidth_gbps": 100, "source": "my bench"}))
    assert get_hardware(str(ok)) == Hardware("mine", 10.0, 100.0, None, "my bench", "unknown")
