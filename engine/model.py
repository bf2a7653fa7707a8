"""A Llama-family decoder whose attention reads and writes a paged KV cache.

One ``forward`` serves prefill, chunked prefill and decode: the tokens of every
sequence in the batch are packed into one ``[T]`` row, each layer writes its new
K/V into the cache slots named by ``slot_mapping`` and then attends over the
sequence's blocks through :func:`kvcache.kernels.paged_attention`.
``forward_dense`` runs the same weights with ordinary causal attention and no
cache, as an independent check of the paged path.

Parameter names match Hugging Face ``LlamaForCausalLM`` without its ``model.``
prefix (``layers.0.self_attn.q_proj.weight``), so checkpoints load by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kvcache.engine.attention_metadata import AttentionMetadata, allocate_kv_caches, build_attention_metadata
from kvcache.engine.model_config import ModelConfig

# The batch metadata and cache allocation live in attention_metadata.py;
# importing them from here keeps working.
__all__ = [
    "AttentionMetadata",
    "Attend",
    "Attention",
    "DecoderLayer",
    "Embedding",
    "LlamaModel",
    "MLP",
    "RMSNorm",
    "allocate_kv_caches",
    "build_attention_metadata",
    "rope",
]

# (q, k, v) -> out; q: [T, Hq, D], k/v: [T, Hkv, D], out: [T, Hq, D]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Embedding(nn.Module):
    """A lookup table ``[V, hidden]``, zero until weights are loaded.

    Not ``nn.Embedding``: its ``normal_`` initialisation costs over a second on
    the meta device (a one-off import), and a checkpoint overwrites it anyway.
    """

    def __init__(self, num: int, dim: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num, dim, device=device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dimension."""

    def __init__(self, dim: int, eps: float, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so half-precision weights keep the reference's accuracy.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """Rotate ``x: [T, H, D]`` by the angles whose ``cos, sin: [T, D/2]`` are given."""
    xf, c, s = x.float(), cos[:, None, :], sin[:, None, :]
    if style == "neox":  # pairs (i, i + D/2), Hugging Face's rotate_half
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    else:  # interleaved pairs (2i, 2i + 1), GPT-J and llama.cpp
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    return out.to(x.dtype)


class Attention(nn.Module):
    """Q/K/V projections, RoPE, an injected attention function, the output projection."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, hq * d, bias=False, device=device)
        self.k_proj = nn.Linear(cfg.hidden_size, hkv * d, bias=False, device=device)
        self.v_proj = nn.Linear(cfg.hidden_size, hkv * d, bias=False, device=device)
        self.o_proj = nn.Linear(hq * d, cfg.hidden_size, bias=False, device=device)
        self.shape = (hq, hkv, d)
        self.rope_style = cfg.rope_style

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        hq, hkv, d = self.shape
        t = x.shape[0]
        q = rope(self.q_proj(x).view(t, hq, d), cos, sin, self.rope_style)  # [T, Hq, D]
        k = rope(self.k_proj(x).view(t, hkv, d), cos, sin, self.rope_style)  # [T, Hkv, D]
        v = self.v_proj(x).view(t, hkv, d)  # [T, Hkv, D]
        return self.o_proj(attend(q, k, v).reshape(t, hq * d))


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False, device=device)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False, device=device)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP, each with a residual connection."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device)
        self.self_attn = Attention(cfg, device)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device)
        self.mlp = MLP(cfg, device)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """RMSNorm, RoPE, grouped-query attention and a SwiGLU MLP per layer.

    Build it on ``device="meta"`` and ``load_state_dict(..., assign=True)`` to
    skip the random initialisation a checkpoint would overwrite anyway.
    """

    def __init__(self, config: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, device=device)
        self.layers = nn.ModuleList(DecoderLayer(config, device) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)
        self.lm_head = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device=device)
        self.scale = config.head_dim**-0.5

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        attn: AttentionMetadata,
        *,
        logits_indices: torch.Tensor | None = None,
        impl: str = "auto",
    ) -> torch.Tensor:
        """Logits of a packed batch, reading and extending the paged KV cache.

        Args:
            input_ids: int64 ``[T]``, the new tokens of every sequence, packed.
            positions: int64 ``[T]``, each token's position in its sequence.
            kv_caches: one ``(k_cache, v_cache)`` per layer, each ``[num_blocks, block_size, Hkv, D]``.
            attn: where the tokens go and which blocks each sequence attends over.
            logits_indices: int64 ``[N]``; when given, used instead of ``attn.logits_indices``.
            impl: the paged-attention implementation (see :func:`kvcache.kernels.paged_attention`).

        Returns:
            fp32 logits ``[N, V]`` for the selected rows, or ``[T, V]`` when none are selected.
        """
        from kvcache.kernels import paged_attention, store_kv

        if len(kv_caches) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} (k_cache, v_cache) pairs, got {len(kv_caches)}")
        if not input_ids.shape == positions.shape == attn.slot_mapping.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)}, positions {tuple(positions.shape)} and "
                f"slot_mapping {tuple(attn.slot_mapping.shape)} must all be [T]"
            )

        def attend_layer(i: int) -> Attend:
            k_cache, v_cache = kv_caches[i]

            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                store_kv(k, v, k_cache, v_cache, attn.slot_mapping)
                return paged_attention(
                    q, k_cache, v_cache, attn.block_table, attn.seq_lens,
                    cu_seqlens_q=attn.cu_seqlens_q, scale=self.scale, impl=impl,
                )  # fmt: skip

            return attend

        h = self._layers(input_ids, positions, attend_layer)
        rows = attn.logits_indices if logits_indices is None else logits_indices
        if rows is not None:
            h = h[rows]  # only these rows pay for the [*, V] matmul
        return self._logits(h)

    def forward_dense(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[L, V]`` (fp32) of one sequence ``input_ids: [L]``, with contiguous causal attention."""
        positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        group = self.config.q_per_kv

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # [L, H, D] -> [H, L, D]; each kv head serves `group` consecutive query heads.
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))
            k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale).transpose(0, 1)

        return self._logits(self._layers(input_ids, positions, lambda i: attend))

    def _layers(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attend_layer: Callable[[int], Attend]
    ) -> torch.Tensor:
        d = self.config.head_dim
        exponents = torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d
        inv_freq = self.config.rope_theta**-exponents  # [D/2]
        angles = positions.float()[:, None] * inv_freq[None, :]  # [T, D/2], shared by every layer
        cos, sin = angles.cos(), angles.sin()
        h = self.embed_tokens(input_ids)  # [T, hidden]
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, attend_layer(i))
        return self.norm(h)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        # h: [N, hidden] -> [N, V]
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, head).float()
