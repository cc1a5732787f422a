"""Functions that apply rotary position embeddings to a (B, H, S, Dh) tensor, registered by name (kind ``rope``).

Scorers recompute a layer's q and k outside the layer, so they must rotate exactly as the layer does;
a spec names the variant under ``attention.rope``. Every applier has the signature of
:class:`tokenprune.plugins.contracts.RopeApplier`: ``(x, position_embeddings, attn)``, where
``position_embeddings`` is the tuple the layer received (``(cos, sin)``, or one complex ``freqs_cis``).
Ropes of one family live in its plug-in module.
"""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import register


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@register("rope", "rotate_half")
def apply_rotate_half(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Rotate-half RoPE (the common layout). ``x``: (B, H, S, Dh); ``cos``/``sin``: (B, S, Dh) or (1, S, Dh)."""
    cos, sin = cos_sin(position_embeddings, "rotate_half")
    cos = cos.unsqueeze(1)  # (B, 1, S, Dh)
    sin = sin.unsqueeze(1)
    return (x * cos) + (_rotate_half(x) * sin)


@register("rope", "none")
def apply_no_rope(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...] = (), attn=None) -> torch.Tensor:
    """For decoders without rotary embeddings (whatever position embeddings the layers receive)."""
    return x


def cos_sin(position_embeddings: tuple[torch.Tensor, ...], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(cos, sin)`` pair a rotate-style applier needs; another layout means the spec names the wrong variant."""
    if len(position_embeddings) != 2:
        raise SpecError(describe(f"{len(position_embeddings)} position-embedding tensors", f"attention.rope {name!r}",
                                 "(cos, sin), as the layer receives them", "name the rope variant of this family"))
    return position_embeddings[0], position_embeddings[1]


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    pairs = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1)  # (..., Dh/2, 2)
    return pairs.flatten(-2)


def _partial(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], rotate, name: str) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of each head and pass the rest through (model dtype)."""
    cos, sin = cos_sin(position_embeddings, name)
    rot = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, S, rot)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat([(x_rot * cos) + (rotate(x_rot) * sin), x_pass], dim=-1)


@register("rope", "partial_rotate_half")
def apply_partial_rotate_half(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...],
                              attn=None) -> torch.Tensor:
    """Rotate-half RoPE on the first ``partial_rotary_factor`` of each head (the rest passes through)."""
    return _partial(x, position_embeddings, _rotate_half, "partial_rotate_half")


@register("rope", "partial_interleaved")
def apply_partial_interleaved(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...],
                              attn=None) -> torch.Tensor:
    """Interleaved-pair RoPE on the first ``partial_rotary_factor`` of each head (the rest passes through)."""
    return _partial(x, position_embeddings, rotate_interleaved, "partial_interleaved")


@register("rope", "module_apply_rotary")
def apply_module_rotary(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """The ``apply_rotary_pos_emb(q, k, cos, sin)`` of the attention module's own modeling module, for specs
    whose text model varies by checkpoint (dense or MoE text models, each with its own RoPE)."""
    import sys

    apply = getattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb", None) if attn is not None else None
    if apply is None:
        raise TypeError(f"rope 'module_apply_rotary': the modeling module of {type(attn).__name__} has no "
                        "apply_rotary_pos_emb(q, k, cos, sin); name the spec's attention.rope explicitly")
    cos, sin = cos_sin(position_embeddings, "module_apply_rotary")
    return apply(x, x, cos, sin)[0]

