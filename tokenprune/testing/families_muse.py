"""Registered test-input builder (kind ``test_inputs``) for Muse Glimmer and Muse Spark.

Their vision tower takes packed patches ``(N, patch_temporal * 3 * patch_size**2)`` with a ``(t, h, w)`` grid
per input (images and videos alike, as Qwen2-VL does, but with the Muse config's own field names); an input
becomes ``t * h * w / merge_size**2`` tokens, counted by the model's own feature methods.
"""

from __future__ import annotations

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import _max_inputs, _packed_grid_inputs


@register("test_inputs", "muse")
def muse_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Images on two aspect ratios and two-frame videos; grids are multiples of ``merge_size``."""
    vis = model.config.vision_config
    dim = vis.patch_temporal * 3 * vis.patch_size ** 2
    m = vis.merge_size
    total = _max_inputs(images_per_sample)
    image_grids = [[1, 4 * m, 4 * m] if i % 2 == 0 else [1, 2 * m, 4 * m] for i in range(total)]
    video_grids = [[2, 2 * m, 2 * m] for _ in range(total)]
    return _packed_grid_inputs(model, images_per_sample, text_lengths, gen, dim, image_grids, video_grids)
