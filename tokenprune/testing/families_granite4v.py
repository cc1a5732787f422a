"""Test-input builder for Granite 4 Vision: LLaVA-NeXT any-res tiles through Window Q-Former projectors."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families import _batch, _image_ranges, _pixels, _prompts


def _granite4v_counts(model, pixel_kwargs) -> list[int]:
    """Each image's token count from the model's own vision path: the length of its packed features (every
    projector packs the same count; the first one sets the placeholder mask)."""
    with torch.no_grad():
        out = model.model.get_image_features(**pixel_kwargs)
    _, packed = out.deepstack_features[0]
    return [f.shape[0] for f in packed]


@register("test_inputs", "granite4_vision")
def granite4_vision_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Granite 4 Vision: ``pixel_values`` (images, max tiles, 3, H, W) padded with zero tiles and
    ``image_sizes`` (images, 2), as the LLaVA-NeXT processor gives; sizes land on different any-res grids, so
    samples carry different token counts (downsampled by ``downsample_rate``, unpadded, newline tokens)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    shapes = [[side, 2 * side], [2 * side, 2 * side], [side + side // 4, side]]
    total = sum(images_per_sample)
    sizes = [shapes[i % 3] for i in range(total)]
    patches = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, side) for s in sizes]
    pixels = torch.zeros((total, max(patches, default=1), 3, side, side), dtype=dtype)
    for i, n in enumerate(patches):
        pixels[i, :n] = _pixels(n, 3, side, gen, dtype)
    image_sizes = torch.tensor(sizes, dtype=torch.long).reshape(total, 2)

    def pixel_kwargs(idx):
        return {"pixel_values": pixels[idx], "image_sizes": image_sizes[idx]}

    counts = []
    for i in range(total):
        counts += _granite4v_counts(model, pixel_kwargs([i]))
    ranges = _image_ranges(images_per_sample)
    seqs = _prompts(images_per_sample, text_lengths, None, cfg.image_token_id, cfg.text_config.vocab_size, gen,
                    per_sample_counts=[counts[r] for r in ranges])
    extra = pixel_kwargs(list(range(total))) if total else {}
    return _batch(model, seqs, extra, cfg.image_token_id,
                  split=lambda b: pixel_kwargs(list(range(ranges[b].start, ranges[b].stop))))
