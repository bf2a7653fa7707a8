"""Build hook for the optional C accelerator; all metadata lives in pyproject.toml.

``kvcache.engine._seqcache`` speeds up sequential replay. It is optional: if it
cannot be compiled, kvcache falls back to the pure-Python block pool, which gives
identical results more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kvcache.engine._seqcache",
            sources=["engine/_seqcache.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
