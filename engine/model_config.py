"""The shape of a Llama-family decoder, validated on construction.

No torch here: the CLI can build and check a config (and size a KV cache from
it) without the ``torch`` extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kvcache.engine.errors import ConfigError

RopeStyle = Literal["neox", "interleaved"]
ROPE_STYLES: tuple[str, ...] = ("neox", "interleaved")


@dataclass(slots=True)
class ModelConfig:
    """Hyper-parameters of a Llama-family model (Llama 2/3, SmolLM, Mistral without SWA).

    Attributes:
        vocab_size: rows of the embedding and of the output head.
        hidden_size: the residual stream width.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads (Hq).
        num_key_value_heads: key/value heads (Hkv); must divide Hq (GQA).
        head_dim: width of one head (D).
        intermediate_size: width of the SwiGLU MLP.
        rope_theta: RoPE base frequency.
        rms_norm_eps: epsilon of every RMSNorm.
        tie_word_embeddings: the output head reuses the embedding matrix.
        max_position_embeddings: the longest context the model was trained for.
        rope_style: which dimensions RoPE rotates together. ``neox`` pairs
            ``i`` with ``i + D/2`` (Hugging Face ``rotate_half``); ``interleaved``
            pairs ``2i`` with ``2i + 1`` (GPT-J, and llama.cpp's row order).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    rope_style: RopeStyle = "neox"

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"model {name} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"model num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"model head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"model {name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.tie_word_embeddings, bool):
            raise ConfigError(f"model tie_word_embeddings must be a bool, got {self.tie_word_embeddings!r}")
        if self.rope_style not in ROPE_STYLES:
            raise ConfigError(f"unknown rope style {self.rope_style!r}; choose one of {', '.join(ROPE_STYLES)}")

    @property
    def q_per_kv(self) -> int:
        """Query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes of K and V one token occupies across all layers."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes

    @classmethod
    def tiny_random(cls) -> ModelConfig:
        """A model small enough for CI (about 0.6 M parameters) with every feature on.

        Two kv heads for four query heads exercise GQA; untied embeddings
        exercise the separate output head.
        """
        return cls(
            vocab_size=8192,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            max_position_embeddings=2048,
        )

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a Hugging Face ``config.json`` of a Llama-family model.

        Args:
            cfg: the parsed JSON.
            source: the path, named in error messages.

        Raises:
            ConfigError: a required key is missing, the architecture is not
                Llama-like, or a feature this engine lacks (RoPE scaling) is on.
        """
        model_type = cfg.get("model_type")
        if model_type not in ("llama", "mistral"):
            raise ConfigError(f"{source}: model_type {model_type!r} is not supported (Llama-family only)")
        if cfg.get("rope_scaling"):
            raise ConfigError(f"{source}: rope_scaling {cfg['rope_scaling']!r} is not supported")
        if cfg.get("sliding_window"):
            raise ConfigError(f"{source}: sliding-window attention is not supported")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ConfigError(f"{source}: attention/MLP biases are not supported")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {cfg['hidden_act']!r} is not supported (silu only)")
        try:
            hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
            return cls(
                vocab_size=cfg["vocab_size"],
                hidden_size=hidden,
                num_hidden_layers=cfg["num_hidden_layers"],
                num_attention_heads=heads,
                num_key_value_heads=cfg.get("num_key_value_heads") or heads,
                head_dim=cfg.get("head_dim") or hidden // heads,
                intermediate_size=cfg["intermediate_size"],
                rope_theta=cfg.get("rope_theta", 10000.0),
                rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
                tie_word_embeddings=cfg.get("tie_word_embeddings", False),
                max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing key {e.args[0]!r}") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:  # hidden // heads on a non-number
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """This config as a Hugging Face ``config.json`` dict (the inverse of :meth:`from_hf`)."""
        if self.rope_style != "neox":
            raise ConfigError("Hugging Face checkpoints use neox RoPE; unpermute the weights first")
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
        }
