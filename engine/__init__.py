"""The engine: block hashing, the block pool, the KV-cache manager and replay.

Follows vLLM v1's automatic prefix caching; see docs/replay.md.
"""
