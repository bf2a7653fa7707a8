"""Parameter counts of a decoder in ``engine/data/model_shapes.json``.

Llama-style decoders: attention q/k/v/o, a SwiGLU MLP (gate, up, down), two
RMSNorms per layer and a final one, an embedding and an lm_head. Per layer::

    attention  = hidden x (q + 2 kv + q)          q = heads x head_dim, kv = kv_heads x head_dim
               + (q + 2 kv)    if qkv_bias        (Qwen2)
               + 2 x head_dim  if qk_norm         (Qwen3)
    norms      = 2 x hidden
    router     = hidden x experts   if num_local_experts > 1
    one MLP    = 3 x hidden x intermediate        (one expert for MoE models)

Every architectural fact comes from the model's entry in the data file (flags
absent there mean a dense, untied model without biases or q/k norms).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvcache.engine.capacity import _shape_data, get_model_shape


@dataclass(slots=True, frozen=True)
class ModelParams:
    """Parameter counts of a decoder, split the way the roofline needs them.

    Attributes:
        hidden, vocab, num_layers: from the model shape.
        layer_shared: per-layer parameters every token uses (attention, norms,
            biases, MoE router).
        layer_expert: parameters of one MLP (one expert for MoE models).
        num_experts, experts_per_token: 1 and 1 for dense models.
        tied: lm_head shares the embedding matrix.
    """

    hidden: int
    vocab: int
    num_layers: int
    layer_shared: int
    layer_expert: int
    num_experts: int
    experts_per_token: int
    tied: bool

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    @property
    def body_active(self) -> int:
        """Parameters one token multiplies through, lm_head and embedding excluded."""
        return self.num_layers * (self.layer_shared + self.experts_per_token * self.layer_expert) + self.hidden

    @property
    def total(self) -> int:
        """Parameters stored (tied embeddings counted once), as model cards report."""
        layers = self.num_layers * (self.layer_shared + self.num_experts * self.layer_expert)
        return layers + self.hidden + self.embedding * (1 if self.tied else 2)


def model_params(name: str) -> ModelParams:
    """Derive :class:`ModelParams` for a model in ``model_shapes.json``."""
    get_model_shape(name)  # unknown names raise ConfigError with the choices
    m = _shape_data()["models"][name.lower()]
    h, hd = m["hidden_size"], m["head_dim"]
    q, kv = m["num_attention_heads"] * hd, m["num_key_value_heads"] * hd
    attn = h * q + 2 * h * kv + q * h
    if m.get("qkv_bias", False):
        attn += q + 2 * kv
    if m.get("qk_norm", False):
        attn += 2 * hd
    experts = m.get("num_local_experts", 1)
    router = h * experts if experts > 1 else 0
    return ModelParams(
        hidden=h,
        vocab=m["vocab_size"],
        num_layers=m["num_hidden_layers"],
        layer_shared=attn + 2 * h + router,
        layer_expert=3 * h * m["intermediate_size"],
        num_experts=experts,
        experts_per_token=m.get("num_experts_per_tok", 1),
        tied=bool(m.get("tie_word_embeddings", False)),
    )
