"""Further registered test-input builders (kind ``test_inputs``) for families whose pixel inputs live under
nested vision configs. Token counts come from the model's own vision path (:func:`media_batch`)."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _count, _dtype, media_batch


@register("test_inputs", "sam_clip_images")
def sam_clip_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Unlimited-OCR (DeepSeek-OCR style): global views (images, 3, H, W) at the SAM encoder's size; each image
    becomes rows of patch tokens, a newline token per row and a view separator, all at the image token id."""
    cfg = model.config
    side = cfg.vision_config.sam_config.image_size
    dtype = next(model.parameters()).dtype
    images = torch.randn((sum(images_per_sample), 3, side, side), generator=gen).to(dtype)
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, {"pixel_values": images[i:i + 1]}))


@register("test_inputs", "molmo2")
def molmo2_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Molmo2: crops (crops, patches, C*p*p), 1 or 2 crops per image; ``image_token_pooling`` (tokens, 4) holds
    indices into the flattened patches of *all* crops passed in one call (so they are re-offset per subset,
    as the processor does), -1 padding; ``image_grids`` (images, 4) gives the low-res and high-res token grids.
    Each image sits between image start/end tokens; ``mm_token_type_ids`` marks its patch tokens (1), which the
    multimodal model turns into one bidirectional attention block."""
    cfg = model.config
    vis = cfg.vision_config
    patches = vis.num_position_embeddings
    dim = vis.num_channels * vis.patch_size ** 2
    total = sum(images_per_sample)
    n_crops = [1 + i % 2 for i in range(total)]
    crops = [torch.randn((n, patches, dim), generator=gen).to(_dtype(model)) for n in n_crops]
    half = patches // 2

    def local_pooling(n):  # token t pools patches 2t, 2t+1 (and 2t+2 when t is even), -1 padding
        rows = []
        for t in range(n * half):
            extra = 2 * t + 2 if t % 2 == 0 and 2 * t + 2 < n * patches else -1
            rows.append([2 * t, 2 * t + 1, extra, -1])
        return torch.tensor(rows)

    def image_kwargs(idx):
        pooling, offset = [], 0
        for i in idx:
            local = local_pooling(n_crops[i])
            pooling.append(torch.where(local >= 0, local + offset, local))
            offset += n_crops[i] * patches
        grids = [[1, half, n_crops[i] - 1, half] for i in idx]
        return {"pixel_values": torch.cat([crops[i] for i in idx]), "image_token_pooling": torch.cat(pooling),
                "image_grids": torch.tensor(grids)}

    special = {cfg.image_start_token_id, cfg.image_end_token_id, cfg.low_res_image_start_token_id,
               cfg.frame_start_token_id, cfg.frame_end_token_id}
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  wrap=([cfg.image_start_token_id], [cfg.image_end_token_id]), special=special)
    batch = media_batch(model, images_per_sample, text_lengths, gen, media,
                        lambda i: _count(model.model.get_image_features, image_kwargs([i])))
    types = (batch.input_ids == cfg.image_token_id).long()
    batch.kwargs["mm_token_type_ids"] = types
    split = batch.extra["split"]
    real = batch.kwargs["attention_mask"].bool()
    batch.extra["split"] = lambda b: {**split(b), "mm_token_type_ids": types[b:b + 1, real[b]]}
    return batch
