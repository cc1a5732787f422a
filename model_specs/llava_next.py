"""LLaVA-NeXT (spec ``llava_next``): its any-resolution layout (``vision_side.tiling: anyres``), from the tower's
per-crop scores to the language model's vision tokens.

The tower runs once per crop: each image is a base crop (the whole image, resized) followed by a grid of
high-resolution crops. The language model sees the base crop's patches, then the crops' patches laid out as one
large grid, cut back to the image's aspect ratio (unpadded), with one newline token after each of its rows (an
image with no crop grid ends with a single newline token). The layout is computed by transformers' own
``get_anyres_image_grid_shape``, ``image_size_to_num_patches`` and ``unpad_image``.

A newline token is no patch and receives no tower attention: its score is 0, so a ranking selector drops the
newlines before any patch, and a merging selector folds them into its kept tokens like any other dropped token.
The layout is a ``TiledGrid`` (base grid, then the crop grid with its newlines) for the grid selectors; an image
with no crop grid (or one unpadded to nothing) has none.
"""

from __future__ import annotations

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register
from tokenprune.scoring.tower_attention import ImageScores, TiledGrid

NEWLINE_SCORE = 0.0  # a newline token is no patch: no tower attention reaches it


@register("vision_tiling", "anyres")
def anyres_layout(crops: ImageScores, image_sizes: torch.Tensor | None, config, where: str) -> ImageScores:
    """Per image, the base crop's scores, then the unpadded crop grid's row by row, each row followed by a
    newline token (``NEWLINE_SCORE``); each image's layout a ``TiledGrid`` (None without a crop grid)."""
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
        unpad_image,
    )

    if image_sizes is None:
        raise UnsupportedError(describe("a call without image_sizes", f"{where}.tiling",
                                        "the multimodal model's image_sizes, to lay the crops out",
                                        "pass image_sizes with the pixel values"))
    crop_size = config.vision_config.image_size
    side = crop_size // config.vision_config.patch_size
    if any(count != side * side for count in crops.counts):
        raise UnsupportedError(describe(
            f"crops of {sorted(set(crops.counts))} tower tokens", f"{where}.tiling",
            f"{side} x {side} patches per crop, the [CLS] token dropped (vision_feature_select_strategy 'default')",
            "any-res tiling reads only towers whose crops are whole patch grids"))
    per_crop = list(crops.scores.split(crops.counts))  # each (side * side,)
    scores, layouts, counts, start = [], [], [], 0
    for size in image_sizes.tolist():
        n = image_size_to_num_patches(size, config.image_grid_pinpoints, crop_size)
        base, tiles = per_crop[start], per_crop[start + 1:start + n]
        start += n
        if tiles:
            rows, cols = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, crop_size)
            grid = torch.stack(tiles).reshape(rows, cols, side, side).permute(0, 2, 1, 3)  # (rows, side, cols, side)
            grid = unpad_image(grid.reshape(1, rows * side, cols * side), size)[0]  # (H, W) the image's aspect
            newline = grid.new_full((grid.shape[0], 1), NEWLINE_SCORE)
            tiles_flat = torch.cat([grid, newline], dim=1).reshape(-1)  # row-major, a newline ending each row
            layouts.append(TiledGrid((side, side), tuple(grid.shape)) if grid.numel() else None)
        else:
            tiles_flat = base.new_full((1,), NEWLINE_SCORE)
            layouts.append(None)
        scores.append(torch.cat([base, tiles_flat]))
        counts.append(scores[-1].numel())
    if start != len(per_crop):
        raise UnsupportedError(describe(
            f"{len(per_crop)} crops through the tower for images needing {start}", f"{where}.tiling",
            "one tower call over every image's crops (image_grid_pinpoints of the config)",
            "check the config's image_grid_pinpoints and vision_config.image_size"))
    return ImageScores(torch.cat(scores), layouts, counts)
