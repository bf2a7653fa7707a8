"""Paged-attention kernels.

Empty for now: the dense reference, the torch implementation and the optional
Triton kernel arrive with the full-engine issue. Nothing here is imported by
``kvcache replay``.
"""
