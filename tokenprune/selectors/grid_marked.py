"""Grid baselines on a patch grid whose every row ends in a marker token (an any-resolution image's crop grid:
one grid with a newline token after each row).

Sample ``b``'s valid slots, in index order, are its ``grid[b] = (h, w)`` patch grid row-major with one marker
after each row: ``h (w + 1)`` tokens. The markers stay row markers: one is kept exactly when its row keeps a
patch, so the kept tokens read as a smaller grid with its own newlines. Averaging a marker into a patch (or
picking it as a grid point) would mix the model's learned separator into image content.

*Downsampling* keeps exactly ``k`` tokens: ``h'`` rows, each its marker and at least one patch, holding
``k - h'`` patches. ``h'`` is the row count of equal spacing, ``round((sqrt(h^2 + 4 k h w) - h) / (2 w))``
(halves up: the root of ``h' (h' w / h + 1) = k``), clamped to [ceil(k / (w + 1)), min(h, floor(k / 2))]. The
patches are the evenly thinned cell centres of an ``h' x w'`` sub-grid, ``w' = min(w, ceil((k - h') / h'))``,
as in ``grid_downsample``; the markers are those of the sub-grid's rows, each of which holds a kept patch
because ``k - h' >= h'``. The counts this allows are 0 and 2 .. h (w + 1), even ones only when w = 1
(:func:`marked_count_fits`).

*Pooling around the downsampled points*: every other patch joins its nearest kept patch on the grid (squared row
and column distance, ties to the earlier), every other marker its nearest kept marker (row distance, ties to the
earlier); each group is averaged.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Merge, Selection, SelectorInputError, check_selector_inputs, check_shape, keep_mask_of,
                      merge_into, selection_from_keep, valid_order)
from .grid import even_points, nearest_owner


def marked_count_fits(k: int, grid: tuple[int, int]) -> bool:
    """Whether a marked ``grid`` = (h, w) can keep exactly ``k`` tokens: every kept row costs its marker and at
    least one patch."""
    height, width = grid
    return k == 0 or (2 <= k <= height * (width + 1) and (width >= 2 or k % 2 == 0))


def split_tiled(k: int, base_tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """(plain part's count, marked part's count) of an image that keeps ``k`` tokens and is a plain grid of
    ``base_tokens`` then a marked ``grid``: the marked part's share is ``round(k N_marked / N)`` (halves up),
    moved by one to a count it can keep, down when the plain grid has room for the token, else up."""
    height, width = grid
    marked = height * (width + 1)
    total = base_tokens + marked
    share = (2 * k * marked + total) // (2 * total)
    if not marked_count_fits(share, grid):
        share += -1 if k - share + 1 <= base_tokens else 1
    return k - share, share


def _check_marked_grid(where: str, valid: torch.Tensor, k: torch.Tensor, grid: torch.Tensor) -> None:
    check_shape(where, "grid", grid, (valid.shape[0], 2), 2)
    tokens = grid[:, 0] * (grid[:, 1] + 1)
    if grid.dtype != torch.long or bool((grid < 1).any()) or not torch.equal(tokens, valid.sum(dim=1)):
        raise SelectorInputError(describe(
            f"marked grids {grid.tolist()} for {valid.sum(dim=1).tolist()} valid tokens", where,
            "a (B, 2) long tensor of (rows, columns) >= 1 with rows * (columns + 1) = N_b (a marker ends each row)",
            "pass each sample's patch grid without its marker column"))
    bad = [b for b, (count, rows_cols) in enumerate(zip(k.tolist(), grid.tolist()))
           if not marked_count_fits(count, tuple(rows_cols))]
    if bad:
        b = bad[0]
        raise SelectorInputError(describe(
            f"sample {b} is asked to keep {int(k[b])} tokens of its {grid[b].tolist()} marked grid", where,
            "0, or 2 .. rows * (columns + 1) tokens (even with one column): each kept row is a marker and a patch",
            "choose the count with `split_tiled`, or move a token to another part of the image"))


def _marked_rows(k: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """(B,) long: the rows ``h'`` that keep ``k`` tokens (see the module)."""
    h, w = height.double(), width.double()
    spacing = torch.floor((torch.sqrt(h * h + 4 * k.double() * h * w) - h) / (2 * w) + 0.5).long()
    low, high = -(-k // (width + 1)), torch.minimum(height, k // 2)
    return torch.maximum(torch.minimum(spacing, high), low)


def marked_grid_downsample(valid: torch.Tensor, k: torch.Tensor, grid: torch.Tensor) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b``'s marked ``grid[b]`` = (h, w): patches spread evenly, each kept row's
    marker with them."""
    where = "marked_grid_downsample"
    check_selector_inputs(where, valid, k, None)
    _check_marked_grid(where, valid, k, grid)
    height, width = grid[:, 0], grid[:, 1]                                 # (B,)
    rows = _marked_rows(k, height, width)                                  # (B,)
    patches = k - rows
    cols = torch.minimum(width, -(-patches // rows.clamp_min(1)))
    row, col, patch_mask = even_points(height, width, rows, cols, patches)  # (B, P_max) each
    i = torch.arange(int(rows.max()) if rows.numel() else 0, device=valid.device)[None, :]  # (1, R_max)
    marker_row = (2 * i + 1) * height[:, None] // (2 * rows.clamp_min(1)[:, None])           # (B, R_max)
    stride = (width + 1)[:, None]                                          # (B, 1) tokens per grid row
    nth = torch.cat([row * stride + col, marker_row * stride + width[:, None]], dim=1)     # (B, P_max + R_max)
    mask = torch.cat([patch_mask, i < rows[:, None]], dim=1)
    slots = valid_order(valid).gather(1, torch.where(mask, nth, 0))       # (B, P_max + R_max) actual slots
    return selection_from_keep(keep_mask_of(slots, mask, valid.shape[1]))


def marked_grid_pool_around(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, grid: torch.Tensor) -> Merge:
    """Merge sample ``b``'s marked ``grid[b]`` into the ``k[b]`` tokens :func:`marked_grid_downsample` keeps:
    patches into their nearest kept patch, markers into their nearest kept marker."""
    where = "marked_grid_pool_around"
    check_selector_inputs(where, valid, k, x)
    centre = marked_grid_downsample(valid, k, grid).keep_mask(valid.shape[1])  # (B, N)
    stride = grid[:, 1:2] + 1                                              # (B, 1)
    nth = (valid.long().cumsum(dim=1) - 1).clamp_min(0)                    # (B, N) index among valid slots
    row, col = nth // stride, nth % stride
    return merge_into(x, nearest_owner(valid, centre, row, col, kind=col == stride - 1))
