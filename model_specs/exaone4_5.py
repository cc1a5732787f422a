"""EXAONE 4.5 (spec ``exaone4_5``): the rope of its Exaone 4 text model."""

from __future__ import annotations

import torch

from tokenprune.plugins import register
from tokenprune.rewrites.rope import apply_rotate_half


@register("rope", "exaone4")
def apply_exaone4(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Rotate-half on sliding-window layers only when the model has a window (its full layers are NoPE), on every
    layer when ``sliding_window`` is None; read from ``attn.sliding_window``/``attn.is_sliding``."""
    if attn is None or not hasattr(attn, "is_sliding"):
        raise TypeError(f"rope 'exaone4' needs an attention module with is_sliding and sliding_window, got "
                        f"{type(attn).__name__}; name another attention.rope in the spec")
    if attn.sliding_window is not None and not attn.is_sliding:
        return x
    return apply_rotate_half(x, position_embeddings)
