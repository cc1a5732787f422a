"""Llama 4 (spec ``llama4``): its rope and test inputs."""

from __future__ import annotations

import torch

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import register


@register("rope", "llama4")
def apply_llama4(x: torch.Tensor, position_embeddings: tuple[torch.Tensor, ...], attn=None) -> torch.Tensor:
    """The layer's position embedding is one complex ``freqs_cis`` (B|1, S, Dh/2); interleaved pairs rotate as
    complex numbers in fp32, then the weight-less L2 ``qk_norm`` when the layer has one. Only on RoPE layers
    (``attn.use_rope``); NoPE layers pass q and k through (their temperature tuning is 1 below floor_scale, which
    the spec's ``tracing.length_limits`` enforces)."""
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


@register("test_inputs", "llama4")
def llama4_inputs(model, images_per_sample, text_lengths, gen):
    """One square tile (images, 3, H, W) per image; the vision tower drops its class token and pixel-shuffles the
    patch grid, so a tile becomes ``(H / patch)^2 * ratio^2`` patch tokens, each at the image token id, between
    the image start and end tokens."""
    from tokenprune.testing.families_more import Media, _dtype, media_batch

    cfg = model.config
    vis = cfg.vision_config
    side = vis.image_size
    images = torch.randn((sum(images_per_sample), 3, side, side), generator=gen).to(_dtype(model))
    tokens = int((side // vis.patch_size) ** 2 * vis.pixel_shuffle_ratio ** 2)
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]))
    return media_batch(model, images_per_sample, text_lengths, gen, media, lambda i: tokens)
