"""Scheduler configuration, validated on construction.

The defaults are vLLM v1's for the offline ``LLM`` class on a GPU with less than
70 GiB of memory (or any A100), as set by ``EngineArgs.get_batch_defaults`` in
``vllm/engine/arg_utils.py``:

=================================  ======================  ============
usage context / device             max_num_batched_tokens  max_num_seqs
=================================  ======================  ============
``LLM`` class, < 70 GiB or A100    8192                    256
API server, < 70 GiB or A100       2048                    256
``LLM`` class, >= 70 GiB (H100..)  16384                   1024
API server, >= 70 GiB (H100..)     8192                    1024
=================================  ======================  ============

:meth:`SchedulerConfig.vllm_defaults` picks the row for a device. vLLM v1 always
chunks prefills for generative models and leaves ``long_prefill_token_threshold``
at 0 (off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kvcache.engine.errors import ConfigError

UsageContext = Literal["llm", "server"]
USAGE_CONTEXTS: tuple[str, ...] = ("llm", "server")

_GIB = 1 << 30


@dataclass(slots=True)
class SchedulerConfig:
    """How the continuous-batching scheduler fills each engine step.

    Attributes:
        max_num_batched_tokens: token budget of one step, prefill and decode
            tokens together (vLLM ``--max-num-batched-tokens``).
        max_num_seqs: most requests in the running queue at once (``--max-num-seqs``).
        enable_chunked_prefill: split a prompt that exceeds the step's remaining
            budget across steps. Off: a prompt waits until it fits whole, and a
            request longer than the budget is rejected (vLLM refuses to start when
            ``max_model_len`` exceeds the budget without chunking).
        long_prefill_token_threshold: most tokens one request may schedule in a
            step (``0`` = no cap), so long prompts leave room for others.
    """

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0

    def __post_init__(self) -> None:
        for name in ("max_num_batched_tokens", "max_num_seqs"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if type(self.long_prefill_token_threshold) is not int or self.long_prefill_token_threshold < 0:
            raise ConfigError(
                f"long_prefill_token_threshold must be an integer >= 0 (0 = off), got {self.long_prefill_token_threshold!r}"
            )
        if not isinstance(self.enable_chunked_prefill, bool):
            raise ConfigError(f"enable_chunked_prefill must be a bool, got {self.enable_chunked_prefill!r}")

    @classmethod
    def vllm_defaults(
        cls, device_memory_bytes: int = 0, device_name: str = "", usage: UsageContext = "llm"
    ) -> SchedulerConfig:
        """vLLM's batch defaults for a device (module docstring table).

        Args:
            device_memory_bytes: the GPU's memory; ``0`` when unknown (vLLM then
                uses the small-device row).
            device_name: e.g. ``"NVIDIA A100-SXM4-80GB"``; an A100 keeps the small
                defaults whatever its memory (vLLM PR #17885).
            usage: ``"llm"`` (offline ``LLM`` class) or ``"server"`` (OpenAI API server).
        """
        if usage not in USAGE_CONTEXTS:
            raise ConfigError(f"unknown usage context {usage!r}; choose one of {', '.join(USAGE_CONTEXTS)}")
        big = device_memory_bytes >= 70 * _GIB and "a100" not in device_name.lower()
        if big:
            tokens, seqs = (16384, 1024) if usage == "llm" else (8192, 1024)
        else:
            tokens, seqs = (8192, 256) if usage == "llm" else (2048, 256)
        return cls(max_num_batched_tokens=tokens, max_num_seqs=seqs)
