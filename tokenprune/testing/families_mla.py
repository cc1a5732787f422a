"""Registered test-input builders (kind ``test_inputs``) for families scored through a registered qk layout
(``attention.qk``): Kimi-K2.5 (multi-head latent attention) and Fuyu (Persimmon's fused query_key_value)."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _dtype, _flat_patches, media_batch


@register("test_inputs", "kimi_k25")
def kimi_k25_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Kimi-K2.5: packed patches (N, 3, p, p) with (t, h, w) grids; the tower pools each merge_kernel_size block
    (and the frames) into one token, so an image is h*w / (kh*kw) tokens at the image token id, between the
    vision start and end tokens."""
    cfg = model.config
    vis = cfg.vision_config
    kh, kw = vis.merge_kernel_size
    grids = [[1, 2 * kh, 4 * kw] if i % 2 == 0 else [1, 4 * kh, 2 * kw] for i in range(sum(images_per_sample))]
    flat, rows = _flat_patches(grids, 3 * vis.patch_size ** 2, gen, _dtype(model))
    patches = flat.view(-1, 3, vis.patch_size, vis.patch_size)  # (sum t*h*w, 3, p, p)

    def image_kwargs(idx):
        return {"pixel_values": torch.cat([patches[rows[i]] for i in idx]),
                "image_grid_thw": torch.tensor([grids[i] for i in idx])}

    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  wrap=([cfg.vision_start_token_id], [cfg.vision_end_token_id]),
                  special={cfg.video_token_id})
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: grids[i][1] * grids[i][2] // (kh * kw))


@register("test_inputs", "fuyu")
def fuyu_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Fuyu: an image is (image_size / patch_size)^2 flattened patches (p*p*C each) that one linear layer embeds;
    the model scatters them, in order, into the image-token rows, so the patches of a call go in one
    (1, N_patches, p*p*C) tensor."""
    cfg = model.config
    per_image = (cfg.image_size // cfg.patch_size) ** 2
    dim = cfg.patch_size ** 2 * cfg.num_channels
    patches = torch.randn((sum(images_per_sample), per_image, dim), generator=gen).to(_dtype(model))
    media = Media(image_kwargs=lambda idx: {"pixel_values": patches[idx].reshape(1, -1, dim)},
                  image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media, lambda i: per_image)
