"""Registered test-input builder (kind ``test_inputs``) for DeepSeek-OCR-2. (Cohere Compass lays out its images as
Qwen3-VL does and uses the ``qwen3_vl`` builder.)"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _count, _dtype, media_batch


@register("test_inputs", "deepseek_ocr2")
def deepseek_ocr2_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """DeepSeek-OCR-2: a global view (images, 3, H, W) per image at the SAM encoder's size and, for every second
    image, one local view (``pixel_values_local`` (local views, 3, H, W), ``num_local_patches`` per image). The
    vision encoder turns each view into its learned query tokens (144 below 1024 px); an image is its local
    views' queries, its global view's queries and a view separator, all at the image token id."""
    cfg = model.config
    side = cfg.vision_config.sam_config.image_size
    dtype = _dtype(model)
    total = sum(images_per_sample)
    local = [i % 2 for i in range(total)]  # local views per image: 0, 1, 0, 1, ...
    globals_ = torch.randn((total, 3, side, side), generator=gen).to(dtype)
    locals_ = torch.randn((sum(local), 3, side, side), generator=gen).to(dtype)
    starts = [sum(local[:i]) for i in range(total)]

    def image_kwargs(idx):
        out = {"pixel_values": globals_[idx], "num_local_patches": [local[i] for i in idx]}
        rows = [r for i in idx for r in range(starts[i], starts[i] + local[i])]
        out["pixel_values_local"] = locals_[rows] if rows else None
        return out

    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, image_kwargs([i])))
