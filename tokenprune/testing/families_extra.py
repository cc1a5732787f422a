"""Further registered test-input builders (kind ``test_inputs``) for families whose pixel inputs live under
nested vision configs. Token counts come from the model's own vision path (:func:`media_batch`)."""

from __future__ import annotations

import torch

from tokenprune.registry import register

from .builders import TestBatch
from .families_more import Media, _count, media_batch


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
