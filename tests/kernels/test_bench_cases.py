"""Benchmark shapes, inputs and the reference check (kernels/bench_cases.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvcache import kernels  # noqa: E402
from kvcache.kernels.bench_cases import (  # noqa: E402
    CHECK_ROWS,
    TOLERANCE,
    BenchShape,
    build_case,
    check_rows,
    max_rel_err,
    reference_rows,
    sweep_shapes,
)
from kvcache.kernels.bench_impls import dense_prefill_grouped, make_runner, skip_reason  # noqa: E402


def shape(op: str = "decode", **kw) -> BenchShape:
    base = dict(batch=3, context=37, block_size=16, heads_q=8, heads_kv=2, head_dim=16, dtype="fp32",
                q_len=1)
    base.update(kw)
    return BenchShape(op, **base)


# ------------------------------------------------------------------ arithmetic
def test_bytes_and_flops_of_a_decode_step():
    s = shape(batch=8, context=4096, block_size=16, heads_q=32, heads_kv=8, head_dim=128)
    assert s.kv_bytes == 2 * 8 * 4096 * 8 * 128 * 4 == 268_435_456  # kernels.md: 268 MB
    # + q and out (8 x 32 x 128 fp32 each), block table (8 x 256 int32), seq_lens
    assert s.bytes_moved == s.kv_bytes + 2 * 8 * 32 * 128 * 4 + 8 * 256 * 4 + 8 * 4
    assert s.causal_pairs == 8 * 4096
    assert s.flops == 4 * 32 * 128 * 8 * 4096


def test_prefill_pairs_follow_the_bottom_right_mask():
    # 2 sequences, context 5, 3 new tokens: queries see 3, 4 and 5 keys.
    s = shape("prefill", batch=2, context=5, block_size=4, q_len=3)
    assert s.causal_pairs == 2 * (3 + 4 + 5)
    assert s.tokens == 6
    # cu_seqlens_q (3 x int32) is read too
    qo = 2 * 6 * 8 * 16 * 4
    assert s.bytes_moved == s.kv_bytes + qo + 2 * 2 * 4 + 2 * 4 + 3 * 4
    full = shape("prefill", batch=1, context=4, block_size=4, q_len=4)
    assert full.causal_pairs == 1 + 2 + 3 + 4


@pytest.mark.parametrize("kw", [
    dict(op="encode"), dict(dtype="fp8"), dict(batch=0), dict(heads_kv=3),
    dict(q_len=2), dict(op="prefill", q_len=38),
])
def test_bad_shapes_raise_value_error(kw):
    op = kw.pop("op", "decode")
    with pytest.raises(ValueError):
        shape(op, **kw)


def test_sweep_is_every_combination_with_context_innermost():
    shapes = sweep_shapes(["decode", "prefill"], ["fp32"], [1, 2], [16], [(8, 2), (8, 8)], 16, [64, 256],
                          prefill_len=128)
    assert len(shapes) == 2 * 2 * 2 * 2
    assert [s.context for s in shapes[:4]] == [64, 256, 64, 256]
    assert [s.heads_kv for s in shapes[:4]] == [2, 2, 8, 8]
    assert {(s.context, s.q_len) for s in shapes if s.op == "prefill"} == {(64, 64), (256, 128)}
    assert {s.q_len for s in shapes if s.op == "decode"} == {1}
    full = sweep_shapes(["prefill"], ["fp32"], [1], [16], [(8, 2)], 16, [64, 256])
    assert [s.q_len for s in full] == [64, 256]


# ------------------------------------------------------------------ inputs
def test_paged_cache_holds_the_contiguous_values_and_nan_elsewhere():
    s = shape(context=37, block_size=16)  # 3 blocks per sequence, the last one partial
    c = build_case(s, seed=1)
    n = s.blocks_per_seq
    assert c.block_table.shape == (3, n) and c.block_table.dtype == torch.int32
    assert c.k_cache.shape == (3 * n + 1, 16, 2, 16)  # one spare block
    for b in range(3):
        blocks = c.block_table[b].long()
        for cache, dense in ((c.k_cache, c.k), (c.v_cache, c.v)):
            tokens = cache[blocks].reshape(n * 16, 2, 16)  # [slots, Hkv, D]
            assert torch.equal(tokens[:37], dense[b].transpose(0, 1))
            assert tokens[37:].isnan().all()  # the partial block's tail is poisoned
    used = set(c.block_table.flatten().tolist())
    spare = [i for i in range(3 * n + 1) if i not in used]
    assert len(spare) == 1 and c.k_cache[spare[0]].isnan().all()
    assert c.block_table.flatten().tolist() != list(range(3 * n))  # physical blocks shuffled
    assert c.cu_seqlens_q is None and c.seq_lens.tolist() == [37] * 3


def test_prefill_case_packs_queries_per_sequence():
    c = build_case(shape("prefill", q_len=5))
    assert c.q.shape == (15, 8, 16)
    assert c.cu_seqlens_q.tolist() == [0, 5, 10, 15]


# ------------------------------------------------------------------ implementations
@pytest.mark.parametrize("op,q_len", [("decode", 1), ("prefill", 5), ("prefill", 37)])
@pytest.mark.parametrize("name", ["torch", "dense_sdpa", "dense_grouped"])
def test_every_cpu_implementation_matches_the_full_oracle(op, q_len, name):
    s = shape(op, q_len=q_len)
    c = build_case(s)
    out = make_runner(name, c).packed(make_runner(name, c).fn())  # [T, Hq, D]
    ref = kernels.reference_paged_attention(*c.args())
    assert out.shape == (s.tokens, 8, 16)
    assert (out - ref).abs().max() / ref.abs().max() <= TOLERANCE["fp32"]


def test_grouped_prefill_tiles_agree_with_one_tile(monkeypatch):
    from kvcache.kernels import bench_impls

    c = build_case(shape("prefill", q_len=20))
    q4 = c.q.view(3, 20, 8, 16).transpose(1, 2).contiguous()
    whole = dense_prefill_grouped(q4, c.k, c.v)
    monkeypatch.setattr(bench_impls, "_SCORE_BUDGET", 4 * 3 * 8 * 37 * 3)  # 3 queries a tile
    assert torch.allclose(dense_prefill_grouped(q4, c.k, c.v), whole, atol=1e-6)


def test_extra_impls_take_paged_attention_arguments():
    c = build_case(shape())
    seen = {}

    def mine(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q):
        seen["T"] = q.shape[0]
        return kernels.paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, impl="torch")

    runner = make_runner("mine", c, {"mine": mine})
    assert max_rel_err(runner, *reference_rows(c)) <= 1e-5 and seen["T"] == 3


def test_skip_reasons_on_cpu():
    s = shape()
    assert skip_reason("torch", s, "cpu", {}) is None
    assert skip_reason("dense_sdpa", s, "cpu", {}) is None
    assert "TRITON_INTERPRET" in skip_reason("triton", s, "cpu", {})
    assert "unknown" in skip_reason("nope", s, "cpu", {})
    assert skip_reason("nope", s, "cpu", {"nope": lambda *a: None}) is None
    for name in ("flashinfer", "flash_attn"):
        assert skip_reason(name, s, "cpu", {})  # not installed, or no CUDA device


# ------------------------------------------------------------------ reference check
def test_check_rows_take_both_ends_of_a_long_prefill():
    s = shape("prefill", batch=4, context=1000, q_len=300)
    assert check_rows(s) == [(0, 0, CHECK_ROWS), (0, 300 - CHECK_ROWS, 300),
                             (3, 0, CHECK_ROWS), (3, 300 - CHECK_ROWS, 300)]
    assert check_rows(shape(batch=1)) == [(0, 0, 1)]
    assert check_rows(shape("prefill", batch=2, q_len=20)) == [(0, 0, 20), (1, 0, 20)]


def test_reference_rows_equal_the_full_float64_oracle():
    s = shape("prefill", batch=3, context=300, q_len=2 * CHECK_ROWS + 10)
    c = build_case(s)
    rows, ref = reference_rows(c)
    assert ref.dtype == torch.float64 and rows.numel() == 4 * CHECK_ROWS
    full = kernels.reference_paged_attention(c.q.double(), c.k_cache.double(), c.v_cache.double(),
                                             c.block_table, c.seq_lens, c.cu_seqlens_q)
    assert torch.equal(full[rows], ref)


@pytest.mark.parametrize("where", ["first", "last", "last_seq"])
def test_refcheck_catches_wrong_rows_at_either_end(where):
    s = shape("prefill", batch=3, context=300, q_len=2 * CHECK_ROWS + 10)
    c = build_case(s)
    row = {"first": 0, "last": s.q_len - 1, "last_seq": 2 * s.q_len + 3}[where]

    def broken(*args):
        out = kernels.paged_attention(*args, impl="torch")
        out[row] += 0.01
        return out

    assert max_rel_err(make_runner("b", c, {"b": broken}), *reference_rows(c)) > 1e-3


def test_refcheck_reports_nan_as_infinite_error():
    c = build_case(shape())
    runner = make_runner("nan", c, {"nan": lambda q, *a: torch.full_like(q, float("nan"))})
    assert max_rel_err(runner, *reference_rows(c)) == float("inf")
