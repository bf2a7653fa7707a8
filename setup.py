"""Build hook for the optional C accelerators; all metadata lives in pyproject.toml.

``kvcache.engine._seqcache`` speeds up sequential replay. It is optional: if it
cannot be compiled, kvcache falls back to the pure-Python block pool, which gives
identical results more slowly.

``kvcache.kernels._paged_cpu`` is a fused paged-attention decode kernel for CPU
(fp32). It is optional too: without it ``paged_attention(impl="torch")`` runs its
torch ops. It picks AVX2+FMA at run time (``__attribute__((target))`` and
``__builtin_cpu_supports``), so it is built without ``-march`` and runs on any
CPU of the platform. It is not linked against OpenMP: it runs on the OpenMP
team torch has loaded (found with dlsym) when there is one, else on pthreads.
"""

import sys

from setuptools import Extension, setup

# dl: dlsym finds an OpenMP runtime already loaded (torch's) at run time.
paged_cpu_libs = {"win32": [], "darwin": ["m", "pthread"]}.get(sys.platform, ["m", "pthread", "dl"])

setup(
    ext_modules=[
        Extension(
            "kvcache.engine._seqcache",
            sources=["engine/_seqcache.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "kvcache.kernels._paged_cpu",
            sources=["kernels/_paged_cpu.c"],
            optional=True,
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            libraries=paged_cpu_libs,
        ),
    ]
)
