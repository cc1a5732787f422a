"""Registered test-input builders (kind ``test_inputs``) for Gemma 4 (and Gemma 4 Unified) and Kosmos-2 / 2.5."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch, left_pad, random_text
from .families_more import Media, _count, _dtype, media_batch

_MASK = "image_embeds_position_mask"  # Kosmos: 1 at the rows that receive image features


def _patch_grid(width: int, height: int, slots: int) -> torch.Tensor:
    """(slots, 2) (x, y) positions of a width x height patch grid, padded with (-1, -1) to ``slots``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.full((slots, 2), -1, dtype=torch.long)
    pos[: width * height] = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
    return pos


def _mark_vision_blocks(batch: TestBatch, image_token: int) -> TestBatch:
    """``mm_token_type_ids`` (1 at image tokens): the multimodal model makes each image a bidirectional block
    on its sliding-window layers when the config asks for it (use_bidirectional_attention='vision')."""
    types = (batch.input_ids == image_token).long()
    batch.kwargs["mm_token_type_ids"] = types
    split = batch.extra["split"]
    real = batch.kwargs["attention_mask"].bool()
    batch.extra["split"] = lambda b: {**split(b), "mm_token_type_ids": types[b:b + 1, real[b]]}
    return batch


@register("test_inputs", "gemma4")
def gemma4_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Gemma 4: patchified images (images, max_patches, 3 * p * p) with (x, y) patch positions
    ``image_position_ids`` (-1 for padding); the vision tower pools ``pooling_kernel_size`` x
    ``pooling_kernel_size`` patches into one token. Even images use a full square grid of 4 x 4 tokens, odd ones
    half of it (padded), so images carry different token counts."""
    vis = model.config.vision_config
    side = 4 * vis.pooling_kernel_size
    return _gemma4_batch(model, images_per_sample, text_lengths, gen, side, 3 * vis.patch_size ** 2)


@register("test_inputs", "gemma4_unified")
def gemma4_unified_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Gemma 4 Unified (encoder-free): merged patches (images, max_patches, 3 * model_patch_size ** 2), one
    token per real patch; 4 x 4 patches for even images, 4 x 2 (padded) for odd ones."""
    vis = model.config.vision_config
    return _gemma4_batch(model, images_per_sample, text_lengths, gen, 4, 3 * vis.model_patch_size ** 2)


def _gemma4_batch(model, images_per_sample, text_lengths, gen, side: int, patch_dim: int) -> TestBatch:
    """Images of side x side patches (even) or side x side/2 (odd, padded); each between begin/end-of-image
    tokens; token counts from the model's own ``get_image_features``."""
    cfg = model.config
    slots = side * side
    total = sum(images_per_sample)
    grids = torch.stack([_patch_grid(side, side if i % 2 == 0 else side // 2, slots) for i in range(total)])
    pixels = torch.rand((total, slots, patch_dim), generator=gen).to(_dtype(model))
    pixels = pixels.masked_fill((grids < 0).all(-1)[..., None], 0.0)  # (images, slots, patch_dim)

    def image_kwargs(idx):
        return {"pixel_values": pixels[idx], "image_position_ids": grids[idx]}

    special = {cfg.image_token_id, cfg.boi_token_id, cfg.eoi_token_id, cfg.video_token_id, cfg.audio_token_id,
               cfg.boa_token_id}
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]), special=special)
    get_features = model.model.get_image_features
    batch = media_batch(model, images_per_sample, text_lengths, gen, media,
                        lambda i: _count(get_features, image_kwargs([i])))
    return _mark_vision_blocks(batch, cfg.image_token_id)


def _kosmos_batch(model, images_per_sample, text_lengths, gen, pixel_key: str, pixels: torch.Tensor) -> TestBatch:
    """One image per sample (the text model scatters (B, latent_query_num, D) features into the rows of
    ``image_embeds_position_mask``); its slots hold the BOS id, as the processors write them. Left-padded with the
    pad id, which the text model's positions skip (so a sample's prefill does not depend on its padding)."""
    if any(n != 1 for n in images_per_sample):
        raise ValueError(f"Kosmos test prompts carry exactly one image each, got {images_per_sample}")
    cfg = model.config
    text = cfg.text_config
    per_image = cfg.latent_query_num
    special = {text.bos_token_id, text.pad_token_id, text.eos_token_id}
    seqs, slots = [], []
    for n_text in text_lengths:
        head = random_text(max(1, n_text // 3), text.vocab_size, special, gen)
        tail = random_text(max(1, n_text - len(head)), text.vocab_size, special, gen)
        seqs.append(head + [text.bos_token_id] * per_image + tail)
        slots.append([0] * len(head) + [1] * per_image + [0] * len(tail))
    ids, attention = left_pad(seqs, text.pad_token_id)
    mask, _ = left_pad(slots, 0)  # (B, S) 1 at the image rows
    real = attention.bool()
    kwargs = {"input_ids": ids, "attention_mask": attention, pixel_key: pixels, _MASK: mask}
    return TestBatch(kwargs=kwargs, vision_mask=mask.bool(), image_token_id=text.bos_token_id,
                     extra={"split": lambda b: {pixel_key: pixels[b:b + 1], _MASK: mask[b:b + 1, real[b]]}},
                     vision_token_ids=[text.bos_token_id])


@register("test_inputs", "kosmos2")
def kosmos2_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Kosmos-2: one (3, H, W) image per sample, resampled to ``latent_query_num`` tokens."""
    vis = model.config.vision_config
    pixels = torch.randn((len(text_lengths), 3, vis.image_size, vis.image_size), generator=gen).to(_dtype(model))
    return _kosmos_batch(model, images_per_sample, text_lengths, gen, "pixel_values", pixels)


@register("test_inputs", "kosmos2_5")
def kosmos2_5_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Kosmos-2.5: Pix2Struct-style ``flattened_patches`` (B, patches, 2 + patch_dim): row and column index,
    then the patch pixels; resampled to ``latent_query_num`` tokens."""
    vis = model.config.vision_config
    rows, cols = 4, 4
    index = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).view(-1, 2)
    patches = torch.randn((len(text_lengths), rows * cols, vis.patch_embed_hidden_size), generator=gen)
    flat = torch.cat([index.float().expand(len(text_lengths), -1, -1), patches], dim=-1).to(_dtype(model))
    return _kosmos_batch(model, images_per_sample, text_lengths, gen, "flattened_patches", flat)
