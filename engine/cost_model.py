"""How long an engine step takes: a roofline over a model shape and an accelerator.

::

    step time = max( FLOPs / (peak FLOP/s x mfu),  bytes / (bandwidth x mbu) ) + overhead

    FLOPs = 2 x active body params x new tokens          (every linear layer)
          + 2 x vocab x hidden x sampled sequences        (lm_head: only the last
                                                            position of a sampling chunk)
          + 4 x layers x heads x head_dim x causal pairs  (QK^T and PV, 2 FLOPs per MAC)
    bytes = weights read once per step                   (+ the embedding rows used)
          + KV bytes per token x (context read + new KV written)

A chunk that starts at position ``s`` with ``n`` new tokens has ``n*s + n(n+1)/2``
causal (query, key) pairs: query ``s+i`` attends to ``s+i+1`` keys. Attention on
the chunk's own fresh KV stays on chip (FlashAttention), so only the ``s`` cached
tokens are read from memory. Prefill is compute-bound and decode memory-bound, the
roofline picks whichever side is slower.

Parameter counts come from ``engine/data/model_shapes.json`` (hidden, intermediate,
layers, heads, vocab, tied embeddings, MoE experts, biases, q/k norms), for
Llama-style decoders: see :mod:`kvcache.engine.model_params`.
Not modelled: tensor/pipeline parallelism, quantized weights beyond the dtype
given, sliding-window layers, communication and CUDA-graph padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kvcache.engine.capacity import DTYPE_BYTES, _shape_data, get_model_shape
from kvcache.engine.errors import ConfigError
from kvcache.engine.hardware import Hardware, get_hardware
from kvcache.engine.model_params import ModelParams, model_params

# Parameter counting lives in model_params.py; importing it from here keeps working.
__all__ = [
    "CostConfig",
    "FixedStepCost",
    "ModelParams",
    "RooflineCostModel",
    "StepCost",
    "StepCostModel",
    "StepWork",
    "model_params",
]


@dataclass(slots=True)
class StepWork:
    """What one engine step computes, summed over its scheduled chunks.

    Attributes:
        num_tokens: new tokens computed (the step's share of the token budget).
        num_seqs: chunks (requests) scheduled.
        num_sampled: chunks that end at their request's last token, so one token
            is sampled from them (lm_head runs there only).
        context_tokens: sum of each chunk's start: cached KV tokens attention reads.
        attention_pairs: sum of ``n*s + n(n+1)/2``: causal (query, key) pairs.
    """

    num_tokens: int = 0
    num_seqs: int = 0
    num_sampled: int = 0
    context_tokens: int = 0
    attention_pairs: int = 0

    def add_chunk(self, start: int, num_tokens: int, samples: bool) -> None:
        """Account one chunk of ``num_tokens`` new tokens after ``start`` computed ones."""
        self.num_tokens += num_tokens
        self.num_seqs += 1
        self.num_sampled += samples
        self.context_tokens += start
        self.attention_pairs += num_tokens * start + num_tokens * (num_tokens + 1) // 2


class StepCostModel(Protocol):
    """Anything that prices a step: the scheduler needs only this."""

    def step_time(self, work: StepWork) -> float: ...


@dataclass(slots=True)
class FixedStepCost:
    """Every step takes ``step_s`` seconds, whatever it computes.

    The scheduler's default (10 ms, the order of one decode step of an 8B model on
    an H100); tests use ``FixedStepCost(1.0)`` so the clock counts steps.
    """

    step_s: float = 0.010

    def __post_init__(self) -> None:
        if not isinstance(self.step_s, (int, float)) or not self.step_s > 0:
            raise ConfigError(f"step time must be a positive number of seconds, got {self.step_s!r}")

    def step_time(self, work: StepWork) -> float:
        return self.step_s


@dataclass(slots=True)
class CostConfig:
    """The roofline's efficiency factors and fixed costs.

    The defaults are assumptions, round figures to calibrate against a measured
    TTFT (sets ``mfu``) and time per output token (sets ``mbu``) on the target:

    Attributes:
        mfu: share of peak FLOP/s a step reaches (model FLOPs utilisation); 0.5.
        mbu: share of peak bandwidth a step reaches (bandwidth utilisation); 0.7.
        step_overhead_s: per-step time no roofline sees (scheduling, sampling,
            kernel launches); 2 ms. ``0`` gives the bare roofline.
        weight_dtype: dtype of the weights (default: the model shape's dtype).
        kv_dtype: dtype of the KV cache (default: the model shape's dtype).
    """

    mfu: float = 0.5
    mbu: float = 0.7
    step_overhead_s: float = 0.002
    weight_dtype: str | None = None
    kv_dtype: str | None = None

    def __post_init__(self) -> None:
        for name in ("mfu", "mbu"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {v!r}")
        if not isinstance(self.step_overhead_s, (int, float)) or self.step_overhead_s < 0:
            raise ConfigError(f"step overhead must be >= 0 seconds, got {self.step_overhead_s!r}")
        for name in ("weight_dtype", "kv_dtype"):
            v = getattr(self, name)
            if v is not None and v not in DTYPE_BYTES:
                raise ConfigError(f"unknown {name} {v!r}; choose one of {', '.join(DTYPE_BYTES)}")


@dataclass(slots=True, frozen=True)
class StepCost:
    """One step's roofline, for reports and tests."""

    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    time_s: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


class RooflineCostModel:
    """Prices engine steps of one model on one accelerator (module docstring).

    Args:
        model: a name from ``engine/data/model_shapes.json``.
        hardware: a :class:`Hardware` or a name for :func:`get_hardware`.
        config: efficiency factors and overhead.
    """

    def __init__(self, model: str, hardware: Hardware | str, config: CostConfig | None = None) -> None:
        self.config = config or CostConfig()
        self.hardware = get_hardware(hardware) if isinstance(hardware, str) else hardware
        self.shape = get_model_shape(model)
        self.params = model_params(model)
        p, cfg = self.params, self.config
        self.weight_bytes_per_param = DTYPE_BYTES[cfg.weight_dtype or self.shape.dtype]
        self.kv_bytes_per_token = self.shape.bytes_per_block(1, cfg.kv_dtype)
        heads = _shape_data()["models"][self.shape.name]["num_attention_heads"]
        self._attn_flops_per_pair = 4 * p.num_layers * heads * self.shape.head_dim
        self._flops_per_token = 2 * p.body_active
        self._flops_per_sample = 2 * p.embedding  # lm_head: vocab x hidden
        self._compute_rate = self.hardware.peak_flops * cfg.mfu
        self._memory_rate = self.hardware.bandwidth_bytes * cfg.mbu
        w = self.weight_bytes_per_param
        self._shared_weight_bytes = w * (p.num_layers * p.layer_shared + p.hidden)
        self._expert_bytes = w * p.num_layers * p.layer_expert
        self._lm_head_bytes = w * p.embedding
        self._embed_row_bytes = w * p.hidden

    def flops(self, work: StepWork) -> float:
        return (
            self._flops_per_token * work.num_tokens
            + self._flops_per_sample * work.num_sampled
            + self._attn_flops_per_pair * work.attention_pairs
        )

    def bytes(self, work: StepWork) -> float:
        p = self.params
        experts_touched = min(p.num_experts, p.experts_per_token * work.num_tokens)
        weights = self._shared_weight_bytes + self._expert_bytes * experts_touched
        weights += self._embed_row_bytes * work.num_tokens
        if work.num_sampled:
            weights += self._lm_head_bytes
        return weights + self.kv_bytes_per_token * (work.context_tokens + work.num_tokens)

    def breakdown(self, work: StepWork) -> StepCost:
        f, b = self.flops(work), self.bytes(work)
        compute_s, memory_s = f / self._compute_rate, b / self._memory_rate
        return StepCost(f, b, compute_s, memory_s, max(compute_s, memory_s) + self.config.step_overhead_s)

    def step_time(self, work: StepWork) -> float:
        """Seconds one step takes (the scheduler's hook)."""
        if not work.num_seqs:
            return 0.0
        return max(self.flops(work) / self._compute_rate, self.bytes(work) / self._memory_rate) + (
            self.config.step_overhead_s
        )

    def prefill_flops(self, tokens: int, context: int = 0) -> float:
        """FLOPs to prefill ``tokens`` tokens after ``context`` cached ones (no sampling)."""
        pairs = tokens * context + tokens * (tokens + 1) // 2
        return self._flops_per_token * tokens + self._attn_flops_per_pair * pairs

    def prefill_flops_saved(self, tokens_hit: int, context: int = 0) -> float:
        """GPU-seconds of compute a prefix-cache hit saved.

        The FLOPs of prefilling ``tokens_hit`` tokens that follow ``context``
        tokens (0 for a hit at the start of a prompt), at ``peak x mfu``. Prefill is
        compute-bound, so this is the time the hit took off the step it was in.
        """
        if tokens_hit < 0 or context < 0:
            raise ValueError(f"token counts must be >= 0, got tokens_hit={tokens_hit}, context={context}")
        return self.prefill_flops(tokens_hit, context) / self._compute_rate
