"""The fused C decode kernel ``kvcache.kernels._paged_cpu`` against the float64 oracle.

``paged_attention(impl="torch")`` sends CPU fp32 decode to this kernel when it
is built. Each case comes from ``make_paged_case``: physical blocks shuffled,
every unused slot poisoned with NaN, junk ids (-1, out of range, other
sequences' blocks) past each sequence's blocks. A kernel that reads one slot
too many returns NaN; one that follows a junk id crashes or returns NaN.
Relative error bound: fp32 1e-5 (kernels.md).

Without the extension the kernel tests are skipped, and
``test_extension_is_built_and_used_by_default`` fails when this machine has a C
toolchain (unless ``KVCACHE_PURE_TORCH`` is set), so a broken build cannot pass
quietly. ``KVCACHE_PURE_TORCH=1`` is tested too: it must give the torch path.
"""

from __future__ import annotations

import os
import threading

import pytest

torch = pytest.importorskip("torch")

from kvcache import kernels  # noqa: E402
from kvcache.kernels import paged_torch  # noqa: E402
from kvcache.kernels.testing import make_paged_case, relative_error  # noqa: E402
from kvcache.kernels.validate import check_paged_inputs  # noqa: E402

PURE_TORCH = os.environ.get("KVCACHE_PURE_TORCH", "") not in ("", "0")
TOL = 1e-5

try:
    from kvcache.kernels import _paged_cpu as ext
except ImportError:  # pragma: no cover - the build failed or there is no compiler
    ext = None

requires_c = pytest.mark.skipif(ext is None, reason="kvcache.kernels._paged_cpu is not built")
# simd=-1: the best this CPU has (AVX2+FMA here); 0: the scalar fallback, run
# on every machine so that it is tested where AVX2 exists too.
SIMD = [-1, 0] + ([1] if ext is not None and ext.simd() == "avx2" else [])
# pool=1: pthreads; 2: the OpenMP team torch loaded (when the kernel finds one).
POOLS = [1] + ([2] if ext is not None and ext.openmp() else [])


def _lens(block_size: int) -> list[int]:
    """1, exact multiples of the block size, and partial last blocks."""
    return [1, block_size, 2 * block_size, block_size + 3, 3 * block_size - 1]


def run_c(case, scale=None, threads=None, **options) -> torch.Tensor:
    """``case`` through the C kernel directly (no fallback can hide a failure)."""
    s = check_paged_inputs(*case.args())
    scale = 1.0 / s.head_dim ** 0.5 if scale is None else scale
    out = torch.empty_like(case.q)  # [B, Hq, D]
    paged_torch.decode_c(ext, case.q, case.k_cache, case.v_cache, case.block_table, s, scale,
                         out, threads=threads, **options)
    return out


def check(out: torch.Tensor, case, scale=None) -> None:
    ref = kernels.reference_paged_attention(*case.args(), scale=scale)
    assert out.shape == case.q.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all(), "read a NaN-poisoned slot"
    err = relative_error(out, ref)
    assert err <= TOL, f"relative error {err:.2e} > {TOL:.0e}"


class Spy:
    """Counts calls of a paged_torch function while still running it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        real = getattr(paged_torch, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(paged_torch, name, wrapped)


# ------------------------------------------------------------------ the build
@pytest.mark.skipif(PURE_TORCH, reason="KVCACHE_PURE_TORCH is set: the C kernel is disabled on purpose")
def test_extension_is_built_and_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcache.engine.replay import c_toolchain_present

    if ext is None and not c_toolchain_present():
        pytest.skip("no C compiler or Python.h here: decode runs on torch ops")
    # setup.py builds the extension with optional=True: a build that failed
    # silently would leave decode on the slow path; fail loudly instead.
    assert ext is not None, "kvcache.kernels._paged_cpu did not import: the C build failed"
    assert paged_torch.load_paged_cpu() is ext
    assert ext.simd() in ("avx2", "scalar")
    c_calls, torch_calls = Spy(monkeypatch, "decode_c"), Spy(monkeypatch, "_decode_sequence")
    case = make_paged_case([5, 33], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=16)
    check(kernels.paged_attention(*case.args(), impl="torch"), case)
    # Without AVX2+FMA the kernel's scalar C is slower than torch: not the default.
    expected = (1, 0) if ext.simd() != "scalar" else (0, 2)
    assert (c_calls.calls, torch_calls.calls) == expected


def test_pure_torch_env_forces_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVCACHE_PURE_TORCH", "1")
    assert paged_torch.load_paged_cpu() is None
    c_calls, torch_calls = Spy(monkeypatch, "decode_c"), Spy(monkeypatch, "_decode_sequence")
    case = make_paged_case(_lens(16), num_q_heads=8, num_kv_heads=2, head_dim=16, block_size=16)
    check(kernels.paged_attention(*case.args(), impl="torch"), case)
    assert (c_calls.calls, torch_calls.calls) == (0, case.q.shape[0])
    # "0" (or empty) means not set.
    monkeypatch.setenv("KVCACHE_PURE_TORCH", "0")
    assert paged_torch.load_paged_cpu() is ext


@pytest.mark.parametrize(("kwargs", "runs_c"), [
    ({}, True),
    ({"use_c": False}, False),
    # A workspace or a chunk size configures the torch ops: asking for one
    # selects them, unless use_c=True says otherwise.
    ({"workspace": paged_torch.Workspace()}, False),
    ({"decode_chunk_bytes": 4096}, False),
    ({"decode_chunk_bytes": None}, False),
    ({"decode_chunk_bytes": paged_torch.DECODE_CHUNK_BYTES}, True),
    ({"workspace": paged_torch.Workspace(), "use_c": True}, True),
])
def test_which_path_paged_attention_torch_takes(monkeypatch: pytest.MonkeyPatch, kwargs: dict,
                                                runs_c: bool) -> None:
    c_calls = Spy(monkeypatch, "decode_c")
    case = make_paged_case([7, 40], num_q_heads=4, num_kv_heads=1, head_dim=16, block_size=4)
    check(paged_torch.paged_attention_torch(*case.args(), **kwargs), case)
    c_available = ext is not None and not PURE_TORCH and ext.simd() != "scalar"
    assert c_calls.calls == (1 if runs_c and c_available else 0)


@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_torch_fallback_matches_reference(monkeypatch: pytest.MonkeyPatch, group: int,
                                          block_size: int) -> None:
    # fp32 decode through paged_attention now runs the C kernel where it is
    # built; the torch chunked path stays the fallback and is checked here on
    # the same cases, forced by the env var.
    monkeypatch.setenv("KVCACHE_PURE_TORCH", "1")
    torch_calls = Spy(monkeypatch, "_decode_sequence")
    case = make_paged_case(_lens(block_size), num_q_heads=2 * group, num_kv_heads=2,
                           head_dim=32, block_size=block_size, seed=block_size)
    check(kernels.paged_attention(*case.args(), impl="torch"), case)
    assert torch_calls.calls == case.q.shape[0]


# ------------------------------------------------------------------ against the oracle
@requires_c
@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_decode_matches_reference(simd: int, group: int, block_size: int) -> None:
    case = make_paged_case(_lens(block_size), num_q_heads=2 * group, num_kv_heads=2,
                           head_dim=32, block_size=block_size, seed=block_size)
    check(run_c(case, simd=simd), case)


@requires_c
@pytest.mark.skipif(PURE_TORCH, reason="KVCACHE_PURE_TORCH is set: the C kernel is disabled on purpose")
def test_paged_attention_runs_the_kernel_and_matches_reference() -> None:
    for block_size in (1, 16, 64):
        case = make_paged_case(_lens(block_size), num_q_heads=8, num_kv_heads=2, head_dim=64,
                               block_size=block_size, seed=7)
        out = kernels.paged_attention(*case.args(), impl="torch")
        check(out, case)
        if ext.simd() != "scalar":
            assert torch.equal(out, run_c(case)), "paged_attention did not run the C kernel"


@requires_c
@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("head_dim", [8, 20, 24, 37, 128])
@pytest.mark.parametrize("group", [3, 5, 6])
def test_odd_head_dims_and_groups(simd: int, head_dim: int, group: int) -> None:
    # D: one 8-wide chunk, 16 + 4 scalar, 16 + 8, 16 + 16 + 5 scalar, 8 x 16.
    # G: the kernels take query heads four at a time; 3, 5 and 6 leave 3, 1, 2.
    case = make_paged_case([1, 9, 16, 31, 100], num_q_heads=2 * group, num_kv_heads=2,
                           head_dim=head_dim, block_size=8, seed=head_dim + group)
    check(run_c(case, simd=simd), case)


@requires_c
@pytest.mark.parametrize("options", [
    {"tile": 1}, {"tile": 2}, {"tile": 3}, {"tile": 7}, {"tile": 256},
    {"heads_per_item": 1}, {"heads_per_item": 2}, {"heads_per_item": 3}, {"heads_per_item": 64},
    {"prefetch": 0}, {"tile": 5, "heads_per_item": 2, "simd": 0},
])
def test_tiles_and_work_split(options: dict) -> None:
    # Tiles cut blocks at odd places (the online softmax rescales at every
    # tile); items of 1..all KV heads, 3 leaving a short last item.
    case = make_paged_case([1, 4, 16, 17, 63, 300], num_q_heads=16, num_kv_heads=4,
                           head_dim=24, block_size=4, seed=11)
    check(run_c(case, **options), case)


@requires_c
def test_block_table_int64_and_non_contiguous() -> None:
    case = make_paged_case(_lens(16), num_q_heads=8, num_kv_heads=2, head_dim=32,
                           block_size=16, seed=3)
    expected = run_c(case)
    check(expected, case)
    case.block_table = case.block_table.long()
    assert torch.equal(run_c(case), expected)
    # A column slice of a wider table: rows are not table.shape[1] apart.
    wide = torch.full((case.block_table.shape[0], 50), 2**31 - 1, dtype=torch.int32)
    wide[:, :case.block_table.shape[1]] = case.block_table
    case.block_table = wide[:, :case.block_table.shape[1] + 2]
    assert not case.block_table.is_contiguous()
    assert torch.equal(run_c(case), expected)


@requires_c
def test_junk_ids_past_the_last_block_are_never_followed() -> None:
    # Huge and negative ids right after each sequence's last block, and a table
    # far wider than needed: following any of them would crash or read NaN.
    case = make_paged_case([1, 16, 17, 40], num_q_heads=4, num_kv_heads=2, head_dim=16,
                           block_size=16, seed=5)
    n_used = [-(-n // 16) for n in (1, 16, 17, 40)]
    table = torch.full((4, 64), -(2**31), dtype=torch.int32)
    for b, n in enumerate(n_used):
        table[b, :n] = case.block_table[b, :n]
        table[b, n::2] = 2**31 - 1
    case.block_table = table
    check(run_c(case), case)
    check(kernels.paged_attention(*case.args(), impl="torch"), case)


@requires_c
def test_strided_inputs_are_read_in_place() -> None:
    # q a head slice of a wider tensor; the caches a KV-head slice of wider
    # caches (only the last dim is contiguous): strides go to C as they are.
    case = make_paged_case([5, 50, 129], num_q_heads=8, num_kv_heads=2, head_dim=32,
                           block_size=16, seed=9)
    ref = kernels.reference_paged_attention(*case.args())
    q_wide = torch.full((3, 12, 32), float("nan"))
    q_wide[:, 2:10] = case.q
    k_wide = torch.full((*case.k_cache.shape[:2], 3, 32), float("nan"))
    v_wide = torch.full_like(k_wide, float("nan"))
    k_wide[:, :, 1:], v_wide[:, :, 1:] = case.k_cache, case.v_cache
    case.q, case.k_cache, case.v_cache = q_wide[:, 2:10], k_wide[:, :, 1:], v_wide[:, :, 1:]
    assert not case.k_cache.is_contiguous() and not case.q.is_contiguous()
    out = run_c(case)
    assert relative_error(out, ref) <= TOL
    out = kernels.paged_attention(*case.args(), impl="torch")
    assert relative_error(out, ref) <= TOL


@requires_c
def test_custom_scale() -> None:
    case = make_paged_case([20, 7], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=4)
    check(run_c(case, scale=0.3), case, scale=0.3)
    assert relative_error(run_c(case, scale=0.3), run_c(case)) > 1e-3, "scale was ignored"


# ------------------------------------------------------------------ threads
def _parallel_case():
    """Big enough that the kernel runs on several threads (> MIN_PARALLEL_BYTES)."""
    lens = [700, 1, 16, 300, 517, 64, 33]
    case = make_paged_case(lens, num_q_heads=8, num_kv_heads=2, head_dim=64, block_size=16,
                           seed=21)
    kv_bytes = 2 * sum(lens) * 2 * 64 * 4
    assert kv_bytes > ext.MIN_PARALLEL_BYTES
    return case


@requires_c
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("simd", SIMD)
def test_results_do_not_depend_on_the_thread_count(simd: int, pool: int) -> None:
    # Each (sequence, KV head) is computed whole by one thread with the same
    # code, so the results are bitwise equal (the bound is 1e-6).
    case = _parallel_case()
    one = run_c(case, threads=1, simd=simd, pool=pool)
    check(one, case)
    for threads in (2, 3, 16):
        many = run_c(case, threads=threads, simd=simd, pool=pool)
        assert torch.equal(many, one), f"threads={threads}: {(many - one).abs().max():.2e}"


@requires_c
def test_torch_openmp_runtime_is_found() -> None:
    # torch is imported, so its OpenMP runtime is loaded where torch uses one
    # (libgomp on Linux wheels): the kernel then runs on that team, whose
    # workers would otherwise spin on the cores our threads need.
    uses_openmp = "OpenMP" in torch.__config__.parallel_info().split("ATen parallel backend:")[-1][:40]
    if uses_openmp and os.name == "posix":
        assert ext.openmp()
    if not ext.openmp():
        with pytest.raises(ValueError, match="OpenMP"):
            run_c(_parallel_case(), pool=2)


@requires_c
def test_concurrent_calls_from_python_threads() -> None:
    # The GIL is released during the call: two Python threads decode at once,
    # each with its own output; no state is shared between calls.
    case = _parallel_case()
    expected = run_c(case)
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for pool in (0, 1, 0):
                results.append(run_c(case, threads=2, pool=pool))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and len(results) == 6
    assert all(torch.equal(r, expected) for r in results)


# ------------------------------------------------------------------ the fallback
@pytest.mark.parametrize("why", ["fp16", "strided_last_dim", "prefill", "grad"])
def test_calls_the_kernel_cannot_serve_go_to_torch(monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    c_calls = Spy(monkeypatch, "decode_c")
    q_lens = [2, 3] if why == "prefill" else None
    dtype = torch.float16 if why == "fp16" else torch.float32
    case = make_paged_case([9, 20], q_lens, num_q_heads=4, num_kv_heads=2, head_dim=16,
                           block_size=4, dtype=dtype)
    ref = kernels.reference_paged_attention(*case.args())
    if why == "strided_last_dim":
        q_wide = torch.zeros(*case.q.shape[:2], 32)
        q_wide[:, :, ::2] = case.q
        case.q = q_wide[:, :, ::2]
    if why == "grad":
        # The C kernel builds no autograd graph, so it must not take the call
        # and return a result that silently drops it. (The torch decode path
        # uses out= ops, which refuse tensors that require grad.)
        case.q.requires_grad_()
        with pytest.raises(RuntimeError, match="automatic differentiation"):
            kernels.paged_attention(*case.args(), impl="torch")
        assert c_calls.calls == 0
        return
    out = kernels.paged_attention(*case.args(), impl="torch")
    assert c_calls.calls == 0
    assert relative_error(out, ref) <= (2e-3 if why == "fp16" else TOL)


# ------------------------------------------------------------------ bad arguments
@requires_c
@pytest.mark.parametrize(("change", "error"), [
    ({"table_elsize": 2}, ValueError),
    ({"num_kv_heads": 3}, ValueError),  # Hq = 4 is not a multiple
    ({"head_dim": 0}, ValueError),
    ({"block_size": 0}, ValueError),
    ({"tile": 100000}, ValueError),
    ({"simd": 7}, ValueError),
    ({"pool": 3}, ValueError),
    ({"q": 0}, ValueError),  # a null pointer
    ({"num_blocks": 1}, ValueError),  # ids the call would read are out of range
    ({"seq_lens": [9, -1]}, ValueError),
    ({"seq_lens": [9, "x"]}, TypeError),
    ({"k_strides": (1, 2)}, TypeError),
    ({"q": "0x10"}, TypeError),
])
def test_bad_arguments_raise(change: dict, error: type[Exception]) -> None:
    case = make_paged_case([9, 20], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=4)
    out = torch.full_like(case.q, 7.0)
    table = case.block_table.contiguous()
    args = {
        "q": case.q.data_ptr(), "k_cache": case.k_cache.data_ptr(),
        "v_cache": case.v_cache.data_ptr(), "out": out.data_ptr(), "table": table.data_ptr(),
        "table_elsize": 4, "table_stride": table.shape[1], "seq_lens": [9, 20],
        "num_blocks": case.k_cache.shape[0], "num_q_heads": 4, "num_kv_heads": 2,
        "head_dim": 16, "block_size": 4, "q_strides": case.q.stride()[:2],
        "k_strides": case.k_cache.stride()[:3], "v_strides": case.v_cache.stride()[:3],
        "out_strides": out.stride()[:2], "scale": 0.25, "threads": 2,
    }
    ext.decode(**args)  # the control: valid as given
    check(out, case, scale=0.25)
    out.fill_(7.0)
    with pytest.raises(error):
        ext.decode(**{**args, **change})
    assert (out == 7.0).all(), "a rejected call wrote its output"
