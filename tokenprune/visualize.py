"""Pictures of what a compiled model kept: the image's patches at every distinct cut, dropped ones darkened.

Vision tokens reach the language model in patch order. For LLaVA-style models one image is an
``rows x cols`` grid of patches in row-major order (576 = 24 x 24 for LLaVA-1.5), so the ``i``-th vision
token of a prompt is patch ``(i // cols, i % cols)``. Families that tile or shuffle pixels (any-res,
pixel shuffle) need their own ``grid``; a token count that is not a square is refused rather than guessed.

    import tokenprune as tp
    from tokenprune.visualize import plot_kept_patches
    pruned = tp.compile(model, "auto", tp.Schedule.pdrop(32))
    fig = plot_kept_patches(pruned, inputs, path="kept.png", mean=proc.image_processor.image_mean,
                            std=proc.image_processor.image_std, question="what is in the picture ?")

Consecutive cuts that keep the same tokens share one panel labelled with their layers, e.g.
``layers 7–11: 10/144 kept``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import UnsupportedError, describe


def _session(model):
    from .rewrite import session_of

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


def distinct_cuts(masks: dict[int, torch.Tensor], num_layers: int) -> list[tuple[int, int, torch.Tensor]]:
    """``(first layer, last layer, mask)`` per distinct kept set: consecutive cuts that keep the same tokens
    (a ratio that drops without changing ``ceil(r * N)``) merge into one span of layers."""
    spans: list[tuple[int, int, torch.Tensor]] = []
    layers = sorted(masks)
    for i, layer in enumerate(layers):
        last = layers[i + 1] - 1 if i + 1 < len(layers) else num_layers - 1
        if spans and torch.equal(spans[-1][2], masks[layer]):
            spans[-1] = (spans[-1][0], last, spans[-1][2])
        else:
            spans.append((layer, last, masks[layer]))
    return spans


def span_label(first: int, last: int, kept: int, total: int) -> str:
    layers = f"layer {first}" if first == last else f"layers {first}\u2013{last}"
    return f"{layers}: {kept}/{total} kept"


PANEL_INCHES = 2.4
MAX_COLUMNS = 4


def plot_kept_patches(model, inputs: dict, *, sample: int = 0, image=None, grid: tuple[int, int] | None = None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      title: str | None = None, question: str | None = None, answer: str | None = None,
                      path: str | Path | None = None, run: bool = True):
    """A grid of panels: the input image, then one panel per distinct kept set with dropped patches darkened.

    ``model`` is a compiled model; with ``run=True`` it is run once on ``inputs`` (no grad) first, otherwise
    the selection of its last forward is drawn. ``image`` (PIL or array) replaces the picture recovered from
    ``inputs["pixel_values"]``; ``question`` and ``answer`` go into the title; ``path`` saves a PNG.
    Returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if run:
        with torch.no_grad():
            model(**inputs)
    masks = kept_patch_masks(model, inputs["input_ids"], sample)
    if not masks:
        raise UnsupportedError(describe("the model made no cut on this input", "plot_kept_patches",
                                        "a schedule with at least one cut and a prompt with vision tokens"))
    n_vis = len(next(iter(masks.values())))
    rows, cols = infer_grid(n_vis, grid)
    picture = _picture(image, inputs, mean, std)
    spans = distinct_cuts(masks, _session(model).schedule.num_layers)

    panels = 1 + len(spans)
    grid_cols = min(MAX_COLUMNS, panels)
    grid_rows = math.ceil(panels / grid_cols)
    heading = _heading(title, question, answer)
    fig, axes = plt.subplots(grid_rows, grid_cols, squeeze=False, layout="constrained",
                             figsize=(PANEL_INCHES * grid_cols, PANEL_INCHES * grid_rows + 0.3 * heading.count("\n")
                                      + (0.4 if heading else 0)))
    axes = axes.flatten()
    extent = (0, cols, rows, 0)
    axes[0].imshow(picture, extent=extent, interpolation="nearest")
    first_cut = spans[0][0]
    seen = {0: "", 1: " (layer 0)"}.get(first_cut, f" (layers 0\u2013{first_cut - 1})")
    axes[0].set_title(f"input: {n_vis} tokens{seen}", fontsize=9)
    for ax, (first, last, mask) in zip(axes[1:], spans):
        shade = np.zeros((rows, cols, 4))  # (rows, cols, RGBA): black, opaque where dropped
        shade[..., 3] = (~mask).reshape(rows, cols).numpy() * 0.8
        ax.imshow(picture, extent=extent, interpolation="nearest")
        ax.imshow(shade, extent=extent, interpolation="nearest")
        ax.set_title(span_label(first, last, int(mask.sum()), n_vis), fontsize=9)
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= panels:
            ax.set_axis_off()
    if heading:
        fig.suptitle(heading, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _picture(image, inputs: dict, mean, std):
    if image is None:
        return image_from_pixels(inputs["pixel_values"], mean, std)
    picture = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=float)
    return picture / 255.0 if picture.max() > 1.0 else picture


def _heading(title: str | None, question: str | None, answer: str | None) -> str:
    lines = [title] if title else []
    if question:
        lines.append(f"Q: {question}" + (f"   A: {answer}" if answer is not None else ""))
    return "\n".join(textwrap.fill(line, 90) for line in lines)


def answer_question(model, inputs: dict, tokenizer, max_new_tokens: int = 12) -> str:
    """The model's greedy answer to prepared ``inputs`` (one prompt), decoded without special tokens."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # (1, T + new)
    new = out[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def prompt_inputs(processor, image, question: str, dtype: torch.dtype | None = None) -> dict:
    """Model inputs for one image and question (the image token is prepended when the question lacks it)."""
    token = getattr(processor, "image_token", "<image>")
    text = question if token in question else f"{token} {question}"
    inputs = dict(processor(text=[text], images=[image], return_tensors="pt"))
    if dtype is not None and "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return inputs


def plot_for_question(model, processor, image, question: str, answer: str | bool = True, **kwargs):
    """:func:`plot_kept_patches` for an image and a question, un-normalising with the processor's stats.

    ``answer=True`` generates the model's greedy answer and shows it under the question; a string is shown
    as given; ``False`` shows none. Returns the figure.
    """
    image_processor = getattr(processor, "image_processor", None)
    kwargs.setdefault("mean", getattr(image_processor, "image_mean", None))
    kwargs.setdefault("std", getattr(image_processor, "image_std", None))
    dtype = next(model.parameters()).dtype
    inputs = prompt_inputs(processor, image, question, dtype)
    if answer is True:
        answer = answer_question(model, inputs, processor.tokenizer)
    shown = question.replace(getattr(processor, "image_token", "<image>"), "").strip()
    return plot_kept_patches(model, inputs, question=shown, answer=answer if isinstance(answer, str) else None,
                             **kwargs)
