"""Registered test-input builders (kind ``test_inputs``) for families whose vision tower is a timm model
(``TimmWrapperModel``): FastVLM and PerceptionLM.

timm cannot be installed in CI (it needs torchvision, whose PyPI wheel for our torch is built against CUDA
torch and fails to import on CPU torch). These families' configs build the vision tower with
``AutoModel.from_config(config.vision_config)``, so their specs' test data give a tiny *transformers*
vision config of the same output layout instead (SegFormer for FastVLM's hierarchical FastViT-HD, CLIP with a
class token for PerceptionLM's PE encoder). Only the test model's vision tower differs from a checkpoint's:
tokenprune works on the text model after the features are merged, which is unchanged. A real checkpoint
needs timm at load time; tokenprune itself never does.
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _count, _dtype, media_batch

# Side of the square test images; the stand-in towers accept any size.
_SIDE = 32


@register("test_inputs", "fast_vlm")
def fast_vlm_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """FastVLM: (images, 3, H, W); the tower's (images, C, h, w) map is flattened to h * w tokens per image
    (counted with the model's own ``get_image_features``)."""
    cfg = model.config
    images = torch.randn((sum(images_per_sample), 3, _SIDE, _SIDE), generator=gen).to(_dtype(model))
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, {"pixel_values": images[i:i + 1]}))


@register("test_inputs", "perception_lm")
def perception_lm_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """PerceptionLM: images as (images, tiles, 3, H, W) with one tile, videos as (videos, frames, 3, H, W) with
    two frames; every tile or frame is pooled to (h / ratio)^2 tokens by the projector. A sample's second
    visual input is a video."""
    cfg = model.config
    dtype = _dtype(model)
    total = sum(images_per_sample)
    images = torch.randn((total, 1, 3, _SIDE, _SIDE), generator=gen).to(dtype)
    videos = torch.randn((total, 2, 3, _SIDE, _SIDE), generator=gen).to(dtype)
    features = model.model.get_image_features
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  video_kwargs=lambda idx: {"pixel_values_videos": videos[idx]}, video_token=cfg.video_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(features, {"pixel_values": images[i:i + 1]}),
                       lambda i: _count(features, {"pixel_values": videos[i:i + 1]}))
