"""Registered test-input builder (kind ``test_inputs``) for Llama 4."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _dtype, media_batch


@register("test_inputs", "llama4")
def llama4_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Llama 4: one square tile (images, 3, H, W) per image; the vision tower drops its class token and
    pixel-shuffles the patch grid, so a tile becomes ``(H / patch)^2 * ratio^2`` patch tokens, each at the image
    token id, between the image start and end tokens."""
    cfg = model.config
    vis = cfg.vision_config
    side = vis.image_size
    images = torch.randn((sum(images_per_sample), 3, side, side), generator=gen).to(_dtype(model))
    tokens = int((side // vis.patch_size) ** 2 * vis.pixel_shuffle_ratio ** 2)
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]))
    return media_batch(model, images_per_sample, text_lengths, gen, media, lambda i: tokens)
