"""kvcache: profile and explain LLM prompt-cache hit rates."""

__version__ = "0.1.0"
