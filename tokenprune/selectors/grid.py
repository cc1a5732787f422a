"""Spatial baselines on a token grid: regular downsampling (a selector) and window pooling (a merge).

Sample ``b``'s valid slots, in index order, are its ``grid[b] = (h, w)`` patch grid in row-major order.

*Downsampling* keeps exactly ``k`` tokens spread evenly: a sub-grid of ``h' x w'`` cell centres (``h' =
round(sqrt(k h / w))`` clamped to [1, h], ``w' = min(w, ceil(k / h'))``, ``h'`` raised to ``ceil(k / w')`` if the
sub-grid is still too small), row ``i`` of it at grid row ``floor((2 i + 1) h / (2 h'))`` and likewise for
columns; of its ``P = h' w' >= k`` points (row-major) the ones numbered ``floor(t P / k)``, t < k, are kept.

*Pooling* averages every ``window = (sh, sw)`` block (clipped at the border) into one token placed at the
block's top-left slot. Its output count is fixed by the grid and window, not by ``k``.

*Pooling around the downsampled points* keeps ``k`` tokens exactly: the ``k`` points of the downsampling are the
kept tokens, every other token joins the nearest of them on the grid (squared row and column distance, ties to
the earlier point), and each group is averaged.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Merge, Selection, SelectorInputError, check_selector_inputs, check_shape, check_valid,
                      keep_mask_of, merge_into, selection_from_keep, valid_order)


def _check_grid(where: str, valid: torch.Tensor, grid: torch.Tensor) -> None:
    check_shape(where, "grid", grid, (valid.shape[0], 2), 2)
    products = grid[:, 0] * grid[:, 1]
    if grid.dtype != torch.long or bool((grid < 1).any()) or not torch.equal(products, valid.sum(dim=1)):
        raise SelectorInputError(describe(
            f"grids {grid.tolist()} for {valid.sum(dim=1).tolist()} valid tokens", where,
            "a (B, 2) long tensor of (rows, columns) with rows * columns = N_b", "pass each sample's patch grid"))


def grid_downsample(valid: torch.Tensor, k: torch.Tensor, grid: torch.Tensor) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b`` spread evenly over its ``grid[b]`` = (h, w) patch grid."""
    where = "grid_downsample"
    check_selector_inputs(where, valid, k, None)
    _check_grid(where, valid, grid)
    height, width = grid[:, 0], grid[:, 1]                                 # (B,)
    wanted = k.clamp_min(1)
    rows = torch.round(torch.sqrt(wanted.double() * height / width)).long().clamp(min=1)
    rows = torch.minimum(rows, height)
    cols = torch.minimum(width, -(-wanted // rows))                        # ceil division
    rows = torch.where(rows * cols < wanted, -(-wanted // cols), rows)
    row, col, mask = even_points(height, width, rows, cols, k)             # (B, K_max) each
    nth_valid = torch.where(mask, row * width[:, None] + col, 0)           # (B, K_max) among the valid slots
    slots = valid_order(valid).gather(1, nth_valid)                        # (B, K_max) actual slots
    return selection_from_keep(keep_mask_of(slots, mask, valid.shape[1]))


def even_points(height: torch.Tensor, width: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, mask), each (B, K_max): ``k[b]`` of the cell centres of a ``rows x cols`` sub-grid of the
    ``height x width`` grid, thinned evenly (point ``floor(t P / k)`` of the P = rows * cols, row-major)."""
    count = int(k.max()) if k.numel() else 0
    wanted, rows, cols = k.clamp_min(1), rows.clamp_min(1), cols.clamp_min(1)
    t = torch.arange(count, device=k.device)[None, :]                     # (1, K_max)
    point = (t * (rows * cols)[:, None]) // wanted[:, None]                # (B, K_max) point of the sub-grid
    row = (2 * (point // cols[:, None]) + 1) * height[:, None] // (2 * rows[:, None])
    col = (2 * (point % cols[:, None]) + 1) * width[:, None] // (2 * cols[:, None])
    return row, col, t < k[:, None]


def grid_pool(x: torch.Tensor, valid: torch.Tensor, grid: torch.Tensor, window: tuple[int, int] = (2, 2)) -> Merge:
    """Average each ``window`` block of sample ``b``'s ``grid[b]`` patch grid into its top-left slot."""
    where = "grid_pool"
    check_valid(where, valid)
    check_shape(where, "x", x, tuple(valid.shape), 3, floating=True)
    _check_grid(where, valid, grid)
    if len(window) != 2 or min(window) < 1:
        raise SelectorInputError(describe(f"window {window}", where, "(rows, columns) >= 1", "pass e.g. (2, 2)"))
    width = grid[:, 1:2]                                                   # (B, 1)
    nth = (valid.long().cumsum(dim=1) - 1).clamp_min(0)                    # (B, N) index among valid slots
    row, col = nth // width, nth % width
    corner = (row - row % window[0]) * width + (col - col % window[1])     # (B, N) block's top-left, among valid
    owner = torch.where(valid, valid_order(valid).gather(1, corner), -1)   # (B, N) actual slot
    return merge_into(x, owner)


def grid_pool_around(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, grid: torch.Tensor) -> Merge:
    """Merge sample ``b``'s ``grid[b]`` patch grid into the ``k[b]`` points :func:`grid_downsample` keeps: every
    other token joins its nearest kept point."""
    where = "grid_pool_around"
    check_selector_inputs(where, valid, k, x)
    _check_grid(where, valid, grid)
    centre = grid_downsample(valid, k, grid).keep_mask(valid.shape[1])     # (B, N)
    width = grid[:, 1:2]                                                   # (B, 1)
    nth = (valid.long().cumsum(dim=1) - 1).clamp_min(0)                    # (B, N) index among valid slots
    return merge_into(x, nearest_owner(valid, centre, nth // width, nth % width))


def nearest_owner(valid: torch.Tensor, centre: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                  kind: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) long: the ``centre`` slot nearest to each valid slot on the grid (squared row and column distance,
    ties to the earlier slot), among the centres of the slot's own ``kind`` when given; -1 where none is."""
    distance = (row[:, :, None] - row[:, None, :]) ** 2 + (col[:, :, None] - col[:, None, :]) ** 2  # (B, N, N)
    apart = ~centre[:, None, :]
    if kind is not None:
        apart = apart | (kind[:, :, None] != kind[:, None, :])
    far = torch.iinfo(distance.dtype).max
    distance = distance.masked_fill(apart, far)
    nearest = distance.argmin(dim=2)                                       # (B, N) first minimum: earlier slot
    found = distance.gather(2, nearest[:, :, None])[:, :, 0] < far
    return torch.where(valid & found, nearest, -1)
