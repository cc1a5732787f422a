"""Functions that apply rotary position embeddings to a (B, H, S, Dh) tensor, registered by name.

Scorers recompute a layer's q and k outside the layer, so they must rotate exactly as the layer does;
a spec names the variant under ``attention.rope``.
"""

from __future__ import annotations

import torch

from tokenprune.registry import register


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@register("rope", "rotate_half")
def apply_rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama-style RoPE. ``x``: (B, H, S, Dh); ``cos``/``sin``: (B, S, Dh) or (1, S, Dh)."""
    cos = cos.unsqueeze(1)  # (B, 1, S, Dh)
    sin = sin.unsqueeze(1)
    return (x * cos) + (_rotate_half(x) * sin)


@register("rope", "none")
def apply_no_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """For decoders without rotary embeddings."""
    return x
