"""Public API: lazy import, dispatch, input checks and the workspace."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from kvcache import kernels  # noqa: E402
from kvcache.kernels.paged_torch import Workspace, paged_attention_torch  # noqa: E402
from kvcache.kernels.testing import make_paged_case, relative_error  # noqa: E402


def test_import_does_not_import_torch():
    code = (
        "import sys, kvcache.kernels as k\n"
        "assert callable(k.paged_attention) and callable(k.store_kv)\n"
        "print('torch' in sys.modules, 'triton' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_store_kv_stays_a_function_after_calls():
    # The submodule shares the name; a lazy import must not shadow the function.
    import kvcache.kernels.store_kv  # noqa: F401

    assert callable(kernels.store_kv)


def test_available_impls():
    names = kernels.available_impls()
    assert names[:2] == ["torch", "reference"]
    assert set(names) <= set(kernels.IMPLS) - {"auto"}


def _case():
    return make_paged_case([5, 9], [2, 9], num_q_heads=4, num_kv_heads=2, head_dim=8,
                           block_size=4)


def test_unknown_impl_lists_choices():
    with pytest.raises(ValueError, match="flash_attn"):
        kernels.paged_attention(*_case().args(), impl="cuda-magic")


@pytest.mark.parametrize("impl", ["flash_attn", "flashinfer"])
def test_missing_backend_names_the_package(impl):
    if impl in kernels.available_impls():
        pytest.skip(f"{impl} is installed")
    with pytest.raises(ImportError, match=impl.replace("_", "-").split("-")[0]):
        kernels.paged_attention(*_case().args(), impl=impl)


def _mutate(name: str):
    c = _case()
    q, k, v, table, lens, cu = c.args()
    if name == "q 2-D":
        q = q.reshape(q.shape[0], -1)
    elif name == "v shape":
        v = v[:, :, :1]
    elif name == "dtype mismatch":
        q = q.double()
    elif name == "integer q":
        q, k, v = q.int(), k.int(), v.int()
    elif name == "head dim":
        q = q[..., :4]
    elif name == "Hq not a multiple of Hkv":
        q = q[:, :3]
    elif name == "block_table float":
        table = table.float()
    elif name == "block_table 1-D":
        table = table[0]
    elif name == "seq_lens length":
        lens = lens[:1]
    elif name == "cu_seqlens length":
        cu = cu[:2]
    elif name == "cu_seqlens end":
        cu = cu.clone()
        cu[-1] -= 1
    elif name == "decode with T != B":
        cu = None
    elif name == "seq_len < q_len":
        lens = torch.tensor([1, 9], dtype=torch.int32)
    elif name == "seq_len past block_table":
        lens = torch.tensor([5, 4 * table.shape[1] + 1], dtype=torch.int32)
    elif name == "block id out of range":
        table = table.clone()
        table[1, 0] = k.shape[0]
    elif name == "not a tensor":
        lens = [5, 9]
    return q, k, v, table, lens, cu


BAD = ["q 2-D", "v shape", "dtype mismatch", "integer q", "head dim", "Hq not a multiple of Hkv",
       "block_table float", "block_table 1-D", "seq_lens length", "cu_seqlens length",
       "cu_seqlens end", "decode with T != B", "seq_len < q_len", "seq_len past block_table",
       "block id out of range", "not a tensor"]


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("name", BAD)
def test_bad_inputs_raise_value_error(name, impl):
    with pytest.raises(ValueError):
        kernels.paged_attention(*_mutate(name), impl=impl)


def test_junk_past_the_used_blocks_is_allowed():
    c = _case()
    table = c.block_table.clone()
    table[0, 2:] = -5  # sequence 0 (5 tokens) uses only 2 blocks
    out = kernels.paged_attention(c.q, c.k_cache, c.v_cache, table, c.seq_lens, c.cu_seqlens_q)
    assert torch.isfinite(out).all()


def test_workspace_is_reused_then_grown():
    ws = Workspace()
    for q_lens in (None, [3, 2]):  # the decode path and the prefill path
        small = make_paged_case([16, 3], q_lens, num_q_heads=4, num_kv_heads=2, head_dim=8,
                                block_size=4)
        ref = kernels.reference_paged_attention(*small.args())
        out = paged_attention_torch(*small.args(), workspace=ws)
        assert relative_error(out, ref) <= 1e-5
        size, ptrs = ws.nbytes(), ws.pointers()
        assert size > 0
        out = paged_attention_torch(*small.args(), workspace=ws)
        assert relative_error(out, ref) <= 1e-5
        assert ws.nbytes() == size and ws.pointers() == ptrs, "same shapes must not allocate"
    size = ws.nbytes()
    big = make_paged_case([64], num_q_heads=4, num_kv_heads=2, head_dim=8, block_size=4)
    out = paged_attention_torch(*big.args(), workspace=ws)
    assert ws.nbytes() > size
    assert relative_error(out, kernels.reference_paged_attention(*big.args())) <= 1e-5


def test_empty_batch():
    c = make_paged_case([], [], num_q_heads=2, num_kv_heads=1, head_dim=4, block_size=4)
    assert kernels.paged_attention(*c.args()).shape == (0, 2, 4)


@pytest.mark.parametrize("q_lens", [None, [2, 9]])
def test_q_may_be_a_strided_view(q_lens):
    # A model slices q out of a fused qkv projection: rows are not contiguous.
    c = make_paged_case([5, 9], q_lens, num_q_heads=4, num_kv_heads=2, head_dim=8, block_size=4)
    qkv = torch.randn(c.q.shape[0], 4 * 8 + 2 * 2 * 8)
    qkv[:, :32] = c.q.reshape(c.q.shape[0], 32)
    q = qkv[:, :32].view(c.q.shape[0], 4, 8)
    assert not q.is_contiguous()
    out = kernels.paged_attention(q, *c.args()[1:])
    assert relative_error(out, kernels.reference_paged_attention(*c.args())) <= 1e-5


def test_workspace_made_in_inference_mode_is_not_reused_outside_it() -> None:
    # The --compute executor calls the kernels under torch.inference_mode(); a
    # later ordinary call must not write into those inference-tensor buffers.
    import torch

    case = make_paged_case([20], [4], num_q_heads=2, num_kv_heads=1, head_dim=8, block_size=4)
    with torch.inference_mode():
        inside = kernels.paged_attention(*case.args(), impl="torch")
    outside = kernels.paged_attention(*case.args(), impl="torch")
    assert torch.equal(inside, outside)
