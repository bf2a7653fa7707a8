"""The contiguous decode baselines agree with the paged oracle on the same K/V."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvcache import kernels  # noqa: E402
from kvcache.kernels.dense import dense_decode_grouped, dense_decode_sdpa  # noqa: E402
from kvcache.kernels.testing import make_paged_case, relative_error  # noqa: E402


@pytest.mark.parametrize("fn", [dense_decode_grouped, dense_decode_sdpa])
@pytest.mark.parametrize("group", [1, 4, 8])
def test_dense_decode_matches_paged_oracle(fn, group):
    # Equal lengths, so one [B, Hkv, L, D] tensor holds every sequence.
    seq_len, block_size, hkv, d = 21, 4, 2, 16
    case = make_paged_case([seq_len] * 3, num_q_heads=hkv * group, num_kv_heads=hkv,
                           head_dim=d, block_size=block_size)
    n = -(-seq_len // block_size)
    table = case.block_table[:, :n].long()

    def dense(cache):  # [B, n, bs, Hkv, D] -> [B, Hkv, L, D]
        return cache[table].reshape(3, n * block_size, hkv, d)[:, :seq_len].transpose(1, 2)

    out = fn(case.q, dense(case.k_cache), dense(case.v_cache))
    ref = kernels.reference_paged_attention(*case.args())
    assert relative_error(out, ref) <= 1e-5


@pytest.mark.parametrize("fn", [dense_decode_grouped, dense_decode_sdpa])
def test_dense_rejects_bad_shapes(fn):
    q = torch.zeros(2, 4, 8)
    with pytest.raises(ValueError):
        fn(q, torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 5, 8))  # 4 heads, 3 kv heads
    with pytest.raises(ValueError):
        fn(q, torch.zeros(2, 2, 5, 8), torch.zeros(2, 2, 6, 8))  # k, v differ
