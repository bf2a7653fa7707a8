"""Paged attention implementations against the float64 oracle.

Error metric: ``relative_error(out, ref) = max|out - ref| / max|ref|`` (see
kvcache.kernels.testing). Bounds from kernels.md: fp32 1e-5, fp16 2e-3.

Every case shuffles physical blocks, poisons unused cache slots with NaN and
fills block_table past each sequence's blocks with junk, so an implementation
that reads a slot it should not returns NaN (relative error inf) or raises.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kvcache import kernels  # noqa: E402
from kvcache.kernels.testing import make_paged_case, relative_error  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}
HEAD_DIM = 16
# Eager FlexAttention warns that it is unfused; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

IMPLS = ["torch"] + (["flex"] if "flex" in kernels.available_impls() else [])
# Eager FlexAttention costs ~0.5 s a call on CPU: it is checked in fp32 only.
IMPL_DTYPES = [("torch", torch.float32), ("torch", torch.float16)] + [
    (impl, torch.float32) for impl in IMPLS if impl != "torch"
]


def _lens(block_size: int) -> list[int]:
    """1, exact multiples of the block size, and partial last blocks."""
    return [1, block_size, 2 * block_size, block_size + 3, 3 * block_size - 1]


def _check(impl: str, case, dtype, scale=None) -> None:
    ref = kernels.reference_paged_attention(*case.args(), scale=scale)
    out = kernels.paged_attention(*case.args(), scale=scale, impl=impl)
    assert out.shape == case.q.shape and out.dtype == case.q.dtype
    assert torch.isfinite(out).all(), "read a NaN-poisoned slot"
    err = relative_error(out, ref)
    assert err <= TOL[dtype], f"{impl}: relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize(("impl", "dtype"), IMPL_DTYPES)
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_decode_matches_reference(impl, dtype, group, block_size):
    case = make_paged_case(_lens(block_size), num_q_heads=2 * group, num_kv_heads=2,
                           head_dim=HEAD_DIM, block_size=block_size, dtype=dtype, seed=block_size)
    _check(impl, case, dtype)


@pytest.mark.parametrize(("impl", "dtype"), IMPL_DTYPES)
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16, 64])
def test_packed_prefill_matches_reference(impl, dtype, group, block_size):
    seq_lens = _lens(block_size)
    # full prefill, chunked prefill (q_len < seq_len), a decode row, a sequence
    # with no query tokens this step, and a chunk that starts mid-block.
    q_lens = [1, block_size, min(5, seq_lens[2] - 1), 0, min(seq_lens[4] - 1, block_size + 2)]
    case = make_paged_case(seq_lens, q_lens, num_q_heads=2 * group, num_kv_heads=2,
                           head_dim=HEAD_DIM, block_size=block_size, dtype=dtype,
                           seed=100 + block_size)
    _check(impl, case, dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_custom_scale(impl):
    case = make_paged_case([20, 7], [4, 7], num_q_heads=4, num_kv_heads=2, head_dim=HEAD_DIM,
                           block_size=4)
    _check(impl, case, torch.float32, scale=0.3)
    default = kernels.paged_attention(*case.args(), impl=impl)
    scaled = kernels.paged_attention(*case.args(), scale=0.3, impl=impl)
    assert relative_error(scaled, default) > 1e-3, "scale was ignored"


def test_auto_is_torch_on_cpu():
    case = make_paged_case([9, 3], num_q_heads=4, num_kv_heads=1, head_dim=8, block_size=4)
    auto = kernels.paged_attention(*case.args())
    assert torch.equal(auto, kernels.paged_attention(*case.args(), impl="torch"))


def test_bigger_head_dim_and_long_chunk():
    # D = 128 like the benchmark, and a chunk long enough to take several tiles.
    case = make_paged_case([300, 130], [300, 2], num_q_heads=8, num_kv_heads=2, head_dim=128,
                           block_size=16)
    _check("torch", case, torch.float32)


def test_reference_matches_dense_sdpa():
    # The oracle itself against torch SDPA on contiguous K/V, mask built with tril.
    case = make_paged_case([11, 16], [4, 16], num_q_heads=2, num_kv_heads=2, head_dim=8,
                           block_size=4, poison=False, shuffle=False)
    ref = kernels.reference_paged_attention(*case.args())
    k = case.k_cache.reshape(-1, 2, 8)  # unshuffled: sequence 0 then sequence 1
    v = case.v_cache.reshape(-1, 2, 8)
    starts, q_starts = [0, 12], [0, 4, 20]
    for b, (seq_len, q_len) in enumerate([(11, 4), (16, 16)]):
        kb = k[starts[b]:starts[b] + seq_len].transpose(0, 1)  # [H, L, D]
        vb = v[starts[b]:starts[b] + seq_len].transpose(0, 1)
        qb = case.q[q_starts[b]:q_starts[b + 1]].transpose(0, 1)  # [H, q_len, D]
        mask = torch.ones(q_len, seq_len, dtype=torch.bool).tril(diagonal=seq_len - q_len)
        want = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
        got = ref[q_starts[b]:q_starts[b + 1]].transpose(0, 1)
        assert relative_error(got, want) <= 1e-5


def test_reference_follows_block_order():
    # The oracle must read blocks in block_table order, not physical order.
    case = make_paged_case([8], num_q_heads=2, num_kv_heads=2, head_dim=8, block_size=4)
    ref = kernels.reference_paged_attention(*case.args())
    swapped = case.block_table.clone()
    swapped[0, :2] = case.block_table[0, :2].flip(0)
    # Decode sees all 8 tokens, so swapping blocks only reorders the sum: a
    # chunked query (sees a prefix) must notice.
    cu = torch.tensor([0, 3], dtype=torch.int32)
    q3 = torch.randn(3, 2, 8)
    a = kernels.reference_paged_attention(q3, case.k_cache, case.v_cache, case.block_table,
                                          case.seq_lens, cu)
    b = kernels.reference_paged_attention(q3, case.k_cache, case.v_cache, swapped,
                                          case.seq_lens, cu)
    assert relative_error(a, b) > 1e-2
    assert torch.isfinite(ref).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("chunk_blocks", [1, 3, None])
@pytest.mark.parametrize("block_size", [1, 16])
def test_decode_chunking(dtype, chunk_blocks, block_size):
    # The default chunk (1 MiB) covers these tiny sequences whole; force
    # several chunks, a partial last chunk, and the unchunked path.
    from kvcache.kernels.paged_torch import paged_attention_torch

    case = make_paged_case([1, 4 * block_size, 7 * block_size + 5], num_q_heads=8,
                           num_kv_heads=2, head_dim=HEAD_DIM, block_size=block_size, dtype=dtype)
    token_bytes = 2 * HEAD_DIM * case.q.element_size()
    chunk = None if chunk_blocks is None else chunk_blocks * block_size * token_bytes
    out = paged_attention_torch(*case.args(), decode_chunk_bytes=chunk)
    assert torch.isfinite(out).all()
    err = relative_error(out, kernels.reference_paged_attention(*case.args()))
    assert err <= TOL[dtype]


@st.composite
def _batches(draw):
    """Random batches: lengths, chunk sizes, block size, GQA ratio."""
    block_size = draw(st.sampled_from([1, 2, 5, 16]))
    n = draw(st.integers(1, 4))
    seq_lens = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    decode = draw(st.booleans())
    q_lens = None if decode else [draw(st.integers(0, L)) for L in seq_lens]
    group = draw(st.sampled_from([1, 2, 4]))
    return seq_lens, q_lens, block_size, group, draw(st.integers(0, 2**16))


@settings(max_examples=30, deadline=None)
@given(_batches())
def test_torch_matches_reference_on_random_batches(batch):
    seq_lens, q_lens, block_size, group, seed = batch
    case = make_paged_case(seq_lens, q_lens, num_q_heads=2 * group, num_kv_heads=2, head_dim=8,
                           block_size=block_size, seed=seed)
    _check("torch", case, torch.float32)
