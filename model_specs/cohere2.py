"""Cohere 2 text models (specs ``aya_vision``, ``cohere2_vision``): their rope."""

from __future__ import annotations

import torch

from tokenprune.plugins import register
from tokenprune.rewrites.rope import cos_sin, rotate_interleaved


@register("rope", "cohere2")
def apply_cohere2(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Interleaved pairs, computed in fp32, and only in sliding-window layers (full layers use none)."""
    cos, sin = cos_sin(position_embeddings, "cohere2")
    if attn is not None and getattr(attn, "sliding_window", None) is None:
        return x
    dtype = x.dtype
    xf = x.float()
    out = (xf * cos.unsqueeze(1)) + (rotate_interleaved(xf) * sin.unsqueeze(1))  # (B, H, S, Dh)
    return out.to(dtype)
