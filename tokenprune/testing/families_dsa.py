"""Registered test-input builders (kind ``test_inputs``) for families with DeepSeek sparse attention: Dots 3 Note."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _dtype, _flat_patches, media_batch


@register("test_inputs", "dots3_note")
def dots3_note_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Dots 3 Note: packed patches (N, C*p*p) with one (t, h, w) grid per image; the merger joins each
    spatial_merge_size^2 block into one token, so an image is t*h*w / merge^2 tokens at the image token id."""
    cfg = model.config
    vis = cfg.vision_config
    merge = vis.spatial_merge_size
    grids = [[1, 2 * merge, 4 * merge] if i % 2 == 0 else [1, 4 * merge, 2 * merge]
             for i in range(sum(images_per_sample))]  # two aspect ratios
    patches, rows = _flat_patches(grids, vis.num_channels * vis.patch_size ** 2, gen, _dtype(model))

    def image_kwargs(idx):
        return {"pixel_values": torch.cat([patches[rows[i]] for i in idx]),
                "image_grid_thw": torch.tensor([grids[i] for i in idx])}

    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  special={cfg.video_token_id, cfg.audio_token_id})
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: grids[i][0] * grids[i][1] * grids[i][2] // merge ** 2)
