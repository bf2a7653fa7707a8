"""--compare: medians against a baseline, shape by shape (analyzers/bench_compare.py)."""

from __future__ import annotations

import pytest

from kvcache.analyzers.bench_compare import compare, describe, shape_key


def row(impl: str = "torch", context: int = 1024, median_ms: float | None = 1.0, **kw) -> dict:
    r = {"op": "decode", "impl": impl, "batch": 2, "context": context, "block_size": 16, "heads_q": 32,
         "heads_kv": 8, "head_dim": 128, "dtype": "fp32", "q_len": 1, "median_ms": median_ms, "status": "ok"}
    r.update(kw)
    return r


def report(*rows: dict) -> dict:
    return {"env": {}, "ceiling": {}, "results": list(rows)}


def test_slower_than_allowed_is_a_regression():
    c = compare(report(row(median_ms=1.2), row("dense_sdpa", median_ms=1.05)),
                report(row(median_ms=1.0), row("dense_sdpa", median_ms=1.0)), max_slowdown=1.10)
    assert not c.passed
    assert [ch.key[1] for ch in c.regressions] == ["torch"]
    assert c.regressions[0].ratio == pytest.approx(1.2)
    assert len(c.unchanged) == 1 and not c.improvements


def test_within_tolerance_and_faster_pass():
    c = compare(report(row(median_ms=1.09), row("dense_sdpa", median_ms=0.5)),
                report(row(median_ms=1.0), row("dense_sdpa", median_ms=1.0)), max_slowdown=1.10)
    assert c.passed and len(c.unchanged) == 1
    assert c.improvements[0].ratio == pytest.approx(0.5)
    d = c.as_dict()
    assert d["passed"] and d["within_tolerance"] == 1 and d["improvements"][0]["impl"] == "dense_sdpa"


def test_shapes_on_one_side_only_are_listed_not_failed():
    c = compare(report(row(context=1024), row(context=8192)),
                report(row(context=1024), row(context=4096)))
    assert c.passed
    assert [k[3] for k in c.missing_in_current] == [4096]
    assert [k[3] for k in c.missing_in_baseline] == [8192]


def test_shapes_differ_by_every_key_field():
    base = row()
    for field, other in [("op", "prefill"), ("impl", "triton"), ("batch", 8), ("block_size", 32),
                         ("heads_q", 64), ("heads_kv", 4), ("head_dim", 64), ("dtype", "bf16"), ("q_len", 2)]:
        assert shape_key(row(**{field: other})) != shape_key(base), field


def test_untimed_rows_are_reported_not_compared():
    c = compare(report(row(median_ms=None, status="failed")), report(row(median_ms=1.0)))
    assert c.passed and c.not_timed[0][1] == "failed in the current run"


def test_older_decode_rows_without_q_len_still_match():
    old = row()
    del old["q_len"]
    c = compare(report(row(median_ms=3.0)), report(old))
    assert len(c.regressions) == 1


def test_max_slowdown_below_one_is_refused():
    with pytest.raises(ValueError):
        compare(report(), report(), max_slowdown=0.9)


def test_describe_names_the_shape():
    assert describe(shape_key(row(op="prefill", q_len=128))) == (
        "prefill torch B=2 ctx=1024 q=128 blk=16 H=32/8 D=128 fp32")
