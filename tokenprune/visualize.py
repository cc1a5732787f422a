"""Pictures of what a compiled model kept: the image's patches at every cut, dropped ones greyed out.

Vision tokens reach the language model in patch order. For LLaVA-style models one image is an
``rows x cols`` grid of patches in row-major order (576 = 24 x 24 for LLaVA-1.5), so the ``i``-th vision
token of a prompt is patch ``(i // cols, i % cols)``. Families that tile or shuffle pixels (any-res,
pixel shuffle) need their own ``grid``; a token count that is not a square is refused rather than guessed.

    import tokenprune as tp
    from tokenprune.visualize import plot_kept_patches
    pruned = tp.compile(model, "auto", tp.Schedule.pdrop(32))
    fig = plot_kept_patches(pruned, inputs, path="kept.png", mean=proc.image_processor.image_mean,
                            std=proc.image_processor.image_std)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import UnsupportedError, describe


def _session(model):
    from .api import _session as session_of

    return session_of(model)


def vision_positions(input_ids: torch.Tensor, token_ids: Sequence[int]) -> list[torch.Tensor]:
    """Per sample, the prompt positions of its vision tokens, in order."""
    mask = torch.isin(input_ids, torch.tensor(list(token_ids), device=input_ids.device))  # (B, S)
    return [torch.nonzero(mask[b]).flatten().cpu() for b in range(mask.shape[0])]


def kept_patch_masks(model, input_ids: torch.Tensor, sample: int = 0) -> dict[int, torch.Tensor]:
    """After a forward of a compiled model: per cut layer, a (N,) bool over the sample's vision tokens."""
    import tokenprune as tp

    session = _session(model)
    token_ids = session.spec.vision_token_ids(model.config)
    positions = vision_positions(input_ids, token_ids)[sample]  # (N,)
    out = {}
    for layer, per_sample in tp.last_selection(model).items():
        kept = per_sample[sample].cpu()
        index = torch.searchsorted(positions, kept)  # (k,): rank of each kept token among the vision tokens
        mask = torch.zeros(len(positions), dtype=torch.bool)
        mask[index] = True
        out[layer] = mask
    return out


def infer_grid(num_tokens: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """``grid`` if given (checked), else the square grid of a square token count."""
    if grid is not None:
        rows, cols = grid
        if rows * cols != num_tokens:
            raise UnsupportedError(describe(f"grid {rows}x{cols} does not hold {num_tokens} vision tokens",
                                            "grid=", f"rows * cols == {num_tokens}"))
        return rows, cols
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise UnsupportedError(describe(
            f"{num_tokens} vision tokens do not form a square patch grid", "plot_kept_patches",
            "one image whose tokens are a row-major square grid (LLaVA-1.5)",
            "pass grid=(rows, cols) for this family's layout"))
    return side, side


def image_from_pixels(pixel_values: torch.Tensor, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None):
    """The first image of ``pixel_values`` as an (H, W, 3) float array in [0, 1] (un-normalised if given)."""
    img = pixel_values.detach().float().cpu()
    while img.dim() > 3:  # (B, [tiles,] 3, H, W): the first image (first tile)
        img = img[0]
    if mean is not None and std is not None:
        img = img * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    else:  # min-max per channel
        lo = img.amin(dim=(1, 2), keepdim=True)
        hi = img.amax(dim=(1, 2), keepdim=True)
        img = (img - lo) / (hi - lo).clamp_min(1e-6)
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_kept_patches(model, inputs: dict, *, sample: int = 0, image=None, grid: tuple[int, int] | None = None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      title: str | None = None, path: str | Path | None = None, run: bool = True):
    """A figure: the image, then one panel per cut with the dropped patches darkened.

    ``model`` is a compiled model; with ``run=True`` it is run once on ``inputs`` (no grad) first, otherwise
    the selection of its last forward is drawn. ``image`` (PIL or array) replaces the picture recovered from
    ``inputs["pixel_values"]``; ``path`` saves a PNG. Returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    if run:
        with torch.no_grad():
            model(**inputs)
    masks = kept_patch_masks(model, inputs["input_ids"], sample)
    n_vis = len(next(iter(masks.values()))) if masks else 0
    if not masks:
        raise UnsupportedError(describe("the model made no cut on this input", "plot_kept_patches",
                                        "a schedule with at least one cut and a prompt with vision tokens"))
    rows, cols = infer_grid(n_vis, grid)
    if image is None:
        picture = image_from_pixels(inputs["pixel_values"], mean, std)
    else:
        picture = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=float)
        picture = picture / 255.0 if picture.max() > 1.0 else picture

    panels = 1 + len(masks)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(picture, extent=(0, cols, rows, 0), interpolation="nearest")
    axes[0].set_title(f"input ({n_vis} vision tokens)", fontsize=9)
    for ax, (layer, mask) in zip(axes[1:], sorted(masks.items())):
        shade = np.zeros((rows, cols, 4))
        shade[..., 3] = (~mask).reshape(rows, cols).numpy() * 0.8  # dark where dropped
        ax.imshow(picture, extent=(0, cols, rows, 0), interpolation="nearest")
        ax.imshow(shade, extent=(0, cols, rows, 0), interpolation="nearest")
        ax.set_title(f"layers {layer}+: kept {int(mask.sum())}/{n_vis}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def prompt_inputs(processor, image, question: str, dtype: torch.dtype | None = None) -> dict:
    """Model inputs for one image and question (the image token is prepended when the question lacks it)."""
    token = getattr(processor, "image_token", "<image>")
    text = question if token in question else f"{token} {question}"
    inputs = dict(processor(text=[text], images=[image], return_tensors="pt"))
    if dtype is not None and "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return inputs


def plot_for_question(model, processor, image, question: str, **kwargs):
    """:func:`plot_kept_patches` for an image and a question, un-normalising with the processor's stats."""
    image_processor = getattr(processor, "image_processor", None)
    kwargs.setdefault("mean", getattr(image_processor, "image_mean", None))
    kwargs.setdefault("std", getattr(image_processor, "image_std", None))
    dtype = next(model.parameters()).dtype
    inputs = prompt_inputs(processor, image, question, dtype)
    kwargs.setdefault("title", question)
    return plot_kept_patches(model, inputs, **kwargs)
