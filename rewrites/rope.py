"""Functions that apply rotary position embeddings to a (B, H, S, Dh) tensor, registered by name (kind ``rope``).

Scorers recompute a layer's q and k outside the layer, so they must rotate exactly as the layer does;
a spec names the variant under ``attention.rope``. Every applier has the signature of
:class:`tokenprune.plugins.contracts.RopeApplier`: ``(x, position_embeddings, attn)``, where
``position_embeddings`` is the tuple the layer received (``(cos, sin)``, or Llama 4's ``(freqs_cis,)``).
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
    """Llama-style RoPE. ``x``: (B, H, S, Dh); ``cos``/``sin``: (B, S, Dh) or (1, S, Dh)."""
    cos, sin = _cos_sin(position_embeddings, "rotate_half")
    cos = cos.unsqueeze(1)  # (B, 1, S, Dh)
    sin = sin.unsqueeze(1)
    return (x * cos) + (_rotate_half(x) * sin)


@register("rope", "none")
def apply_no_rope(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...] = (), attn=None) -> torch.Tensor:
    """For decoders without rotary embeddings (whatever position embeddings the layers receive)."""
    return x


def _cos_sin(position_embeddings: tuple[torch.Tensor, ...], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(cos, sin)`` pair a rotate-style applier needs; another layout means the spec names the wrong variant."""
    if len(position_embeddings) != 2:
        raise SpecError(describe(f"{len(position_embeddings)} position-embedding tensors", f"attention.rope {name!r}",
                                 "(cos, sin), as the layer receives them", "name the rope variant of this family"))
    return position_embeddings[0], position_embeddings[1]


def _rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    pairs = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1)  # (..., Dh/2, 2)
    return pairs.flatten(-2)


@register("rope", "cohere2")
def apply_cohere2(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Cohere 2: interleaved pairs, computed in fp32, and only in sliding-window layers (full layers use none)."""
    cos, sin = _cos_sin(position_embeddings, "cohere2")
    if attn is not None and getattr(attn, "sliding_window", None) is None:
        return x
    dtype = x.dtype
    xf = x.float()
    out = (xf * cos.unsqueeze(1)) + (_rotate_interleaved(xf) * sin.unsqueeze(1))
    return out.to(dtype)


@register("rope", "exaone4")
def apply_exaone4(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Exaone 4: rotate-half on sliding-window layers only when the model has a window (its full layers are
    NoPE), on every layer when ``sliding_window`` is None; read from ``attn.sliding_window``/``attn.is_sliding``."""
    if attn is None or not hasattr(attn, "is_sliding"):
        raise TypeError(f"rope 'exaone4' needs an attention module with is_sliding and sliding_window, got "
                        f"{type(attn).__name__}; name another attention.rope in the spec")
    if attn.sliding_window is not None and not attn.is_sliding:
        return x
    return apply_rotate_half(x, position_embeddings)


def _partial(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], rotate, name: str) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of each head and pass the rest through (model dtype)."""
    cos, sin = _cos_sin(position_embeddings, name)
    rot = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, S, rot)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat([(x_rot * cos) + (rotate(x_rot) * sin), x_pass], dim=-1)


@register("rope", "partial_rotate_half")
def apply_partial_rotate_half(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...],
                              attn=None) -> torch.Tensor:
    """GLM-4.5V (Glm4vMoe): rotate-half RoPE on the first ``partial_rotary_factor`` of each head."""
    return _partial(x, position_embeddings, _rotate_half, "partial_rotate_half")


@register("rope", "partial_interleaved")
def apply_partial_interleaved(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...],
                              attn=None) -> torch.Tensor:
    """GLM-4.1V / GLM-OCR: interleaved-pair RoPE on the first ``partial_rotary_factor`` of each head."""
    return _partial(x, position_embeddings, _rotate_interleaved, "partial_interleaved")


@register("rope", "module_apply_rotary")
def apply_module_rotary(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """The ``apply_rotary_pos_emb(q, k, cos, sin)`` of the attention module's own modeling module, for specs
    whose text model varies by checkpoint (GLM-4.6V: GLM-4.1V-style or MoE text, each with its own RoPE)."""
    import sys

    apply = getattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb", None) if attn is not None else None
    if apply is None:
        raise TypeError(f"rope 'module_apply_rotary': the modeling module of {type(attn).__name__} has no "
                        "apply_rotary_pos_emb(q, k, cos, sin); name the spec's attention.rope explicitly")
    cos, sin = _cos_sin(position_embeddings, "module_apply_rotary")
    return apply(x, x, cos, sin)[0]


@register("rope", "llama4")
def apply_llama4(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """Llama 4: the layer's position embedding is one complex ``freqs_cis`` (B|1, S, Dh/2); interleaved pairs
    rotate as complex numbers in fp32, then the weight-less L2 ``qk_norm`` when the layer has one. Only on RoPE
    layers (``attn.use_rope``); NoPE layers pass q and k through (their temperature tuning is 1 below
    floor_scale, which the spec's ``tracing.length_limits`` enforces)."""
    if attn is not None and not getattr(attn, "use_rope", True):
        return x
    if len(position_embeddings) != 1:
        raise SpecError(describe(f"{len(position_embeddings)} position-embedding tensors", "attention.rope 'llama4'",
                                 "one complex freqs_cis (B|1, S, Dh/2), as Llama 4 layers receive",
                                 "name the rope variant of this family in the spec"))
    (freqs_cis,) = position_embeddings
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, H, S, Dh/2)
    out = torch.view_as_real(pairs * freqs_cis[:, None]).flatten(3).type_as(x)  # (B, H, S, Dh)
    norm = getattr(attn, "qk_norm", None)
    return norm(out) if norm is not None else out
