"""The Triton kernel under the CPU interpreter, against the float64 oracle.

``TRITON_INTERPRET`` must be set before ``@triton.jit`` runs, so the kernel
runs in one child process with the variable set; the parent never imports the
kernel module and other tests keep a clean environment. Shapes stay tiny: the
interpreter costs milliseconds per program x kv tile. fp32 and fp16 only (bf16
``tl.dot`` is wrong in the interpreter). Bounds as in test_paged_attention.py:
``max|out - ref| / max|ref|`` <= 1e-5 (fp32), 2e-3 (fp16).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

CHILD = r"""
import json, sys
import torch
from kvcache import kernels
from kvcache.kernels.testing import make_paged_case, relative_error

results = {}
for name, spec in json.loads(sys.argv[1]).items():
    case = make_paged_case(spec["seq_lens"], spec["q_lens"], num_q_heads=spec["hq"],
                           num_kv_heads=2, head_dim=spec["d"], block_size=spec["bs"],
                           dtype=getattr(torch, spec["dtype"]), seed=spec["seed"])
    out = kernels.paged_attention(*case.args(), impl="triton")
    ref = kernels.reference_paged_attention(*case.args())
    results[name] = {"err": relative_error(out, ref), "finite": bool(torch.isfinite(out).all()),
                     "shape_ok": out.shape == case.q.shape and out.dtype == case.q.dtype}
print(json.dumps(results))
"""

TOL = {"float32": 1e-5, "float16": 2e-3}


def _cases() -> dict[str, dict]:
    cases = {}
    for dtype in ("float32", "float16"):
        for bs in (1, 16, 64):
            for group in (1, 4, 8):
                # lens: 1, a whole block, a partial last block (clipped for bs=1)
                seq_lens = [1, bs, bs + 3] if bs > 1 else [1, 2, 5]
                for mode, q_lens in (("decode", None), ("prefill", [1, min(bs, 2), 4])):
                    name = f"{dtype}-bs{bs}-g{group}-{mode}"
                    cases[name] = dict(seq_lens=seq_lens, q_lens=q_lens, hq=2 * group, d=16,
                                       bs=bs, dtype=dtype, seed=bs + group)
    # head_dim that is not a power of two, and a query tile longer than BLOCK_M
    cases["float32-d24-long-chunk"] = dict(seq_lens=[40, 9], q_lens=[37, 9], hq=4, d=24, bs=16,
                                           dtype="float32", seed=7)
    return cases


CASES = _cases()


def _run_child(arg: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def triton_results() -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = _run_child(json.dumps(CASES), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_reference(triton_results, name):
    r = triton_results[name]
    assert r["shape_ok"]
    assert r["finite"], "read a NaN-poisoned slot"
    tol = TOL[CASES[name]["dtype"]]
    assert r["err"] <= tol, f"relative error {r['err']:.2e} > {tol:.0e}"


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    one = {"c": dict(seq_lens=[3], q_lens=None, hq=2, d=16, bs=4, dtype="float32", seed=0)}
    proc = _run_child(json.dumps(one), env)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "TRITON_INTERPRET=1" in proc.stderr
