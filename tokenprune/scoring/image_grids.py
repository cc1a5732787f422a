"""A cut's vision tokens regrouped into the grids the grid selectors sample, one grid part per row.

A sample's keep count is split over its images in proportion to their tokens (largest remainder, ties to the
earlier image). An image whose tokens form one (rows, columns) grid is one *plain* part. An any-resolution
image (``TiledGrid``) is two parts: its base grid (plain) and its high-resolution grid with a newline ending
each row (*marked*, see ``tokenprune.selectors.grid_marked``), its count split by
``tokenprune.selectors.split_tiled``. The grids must be whole: every token of each image still present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenprune import selectors
from tokenprune.errors import UnsupportedError, describe

from .context import ScoreContext
from .tower_attention import TiledGrid


@dataclass(frozen=True)
class GridRows:
    """Grid parts of a cut's images, one per row: the context slots of each part's tokens in grid order."""

    sample: torch.Tensor  # (R,) long: the sample each part belongs to
    slots: torch.Tensor  # (R, P) long: context slot of each of the part's tokens (padding: n)
    valid: torch.Tensor  # (R, P) bool
    counts: torch.Tensor  # (R,) long: tokens the part keeps
    grid: torch.Tensor  # (R, 2) long: (rows, columns) of its patches
    shape: tuple[int, int]  # (B, n) of the context

    def keep_mask(self, keep_rows: torch.Tensor) -> torch.Tensor:
        """(B, n) bool context keep mask from a (R, P) keep mask over the parts."""
        keep = torch.zeros(self.shape, dtype=torch.bool, device=self.slots.device)
        real = keep_rows & self.valid
        keep[self.sample[:, None].expand_as(self.slots)[real], self.slots[real]] = True
        return keep

    def owner_slots(self, merge: selectors.Merge, owner: torch.Tensor) -> None:
        """Write into ``owner`` (B, n) the context slot each of the parts' tokens merges into (-1: dropped)."""
        survivor = torch.where(merge.destination >= 0,
                               merge.indices.gather(1, merge.destination.clamp_min(0)), -1)  # (R, P) in part
        owner_slot = torch.where(survivor >= 0, self.slots.gather(1, survivor.clamp_min(0)), -1)
        real = self.valid
        owner[self.sample[:, None].expand_as(self.slots)[real], self.slots[real]] = owner_slot[real]


def grid_parts(ctx: ScoreContext, counts: torch.Tensor, name: str) -> tuple[GridRows, GridRows]:
    """(plain parts, marked parts) of the cut's images, with their shares of each sample's keep count."""
    side = ctx.vision_side
    candidates = ctx.vision & ctx.valid  # (B, n)
    image, patch = side.image(), side.patch()  # (B, n)
    layouts, sizes = side.grid(), side.counts()
    b_idx, s_idx = torch.nonzero(candidates, as_tuple=True)
    of_token = image[b_idx, s_idx]
    present = torch.bincount(of_token, minlength=len(sizes)).tolist()
    owners = dict(zip(of_token.tolist(), b_idx.tolist()))  # image -> its sample
    used = sorted(owners)
    bad = [g for g in used if present[g] != sizes[g] or layouts[g] is None]
    if bad:
        g = bad[0]
        raise UnsupportedError(describe(
            f"image {g} has {present[g]} of its {sizes[g]} tokens at this cut"
            + ("" if layouts[g] is not None else " and no patch grid"),
            f"selector {name!r} at the cut before layer {ctx.layer} (spec {ctx.spec.name!r})",
            "each image's whole patch grid (one grid, or an any-res image's base and crop grids): the first cut "
            "of the schedule, on a tower whose tokens form a grid",
            "cut with this selector only once (the schedule's first cut), or use 'fastervlm' / 'random-keep'"))
    n = candidates.shape[1]
    row_of = {g: r for r, g in enumerate(used)}
    image_slots = torch.full((len(used), max((sizes[g] for g in used), default=0)), n, dtype=torch.long,
                             device=candidates.device)  # (G, P) each image's slots in token order
    rows = torch.tensor([row_of[g] for g in of_token.tolist()], dtype=torch.long, device=candidates.device)
    image_slots[rows, patch[b_idx, s_idx]] = s_idx
    shares = _split_counts(counts.tolist(), [owners[g] for g in used], [sizes[g] for g in used])
    plain, marked = [], []  # (image row, first token, tokens, grid, count)
    for r, (g, share) in enumerate(zip(used, shares)):
        layout = layouts[g]
        if isinstance(layout, TiledGrid):
            base_tokens, tile_tokens = layout.counts()
            base_share, tile_share = selectors.split_tiled(share, base_tokens, layout.tiles)
            plain.append((r, 0, base_tokens, layout.base, base_share))
            marked.append((r, base_tokens, tile_tokens, layout.tiles, tile_share))
        else:
            plain.append((r, 0, sizes[g], tuple(layout), share))
    sample = torch.tensor([owners[g] for g in used], dtype=torch.long, device=candidates.device)
    return (_rows(plain, image_slots, sample, tuple(candidates.shape)),
            _rows(marked, image_slots, sample, tuple(candidates.shape)))


def _rows(parts: list, image_slots: torch.Tensor, sample: torch.Tensor, shape: tuple[int, int]) -> GridRows:
    device = image_slots.device

    def as_long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    image_row, first, tokens = (as_long([part[i] for part in parts]) for i in range(3))
    width = int(tokens.max()) if parts else 0
    offset = torch.arange(width, device=device)[None, :]  # (1, P)
    inside = offset < tokens[:, None]  # (R, P)
    index = (first[:, None] + offset).clamp_max(max(image_slots.shape[1] - 1, 0))
    slots = torch.where(inside, image_slots[image_row[:, None], index], shape[1]) if parts else \
        torch.zeros(0, 0, dtype=torch.long, device=device)
    grid = as_long([list(part[3]) for part in parts]).reshape(-1, 2)
    return GridRows(sample[image_row], slots, slots < shape[1], as_long([part[4] for part in parts]), grid, shape)


def _split_counts(counts: list[int], sample_of: list[int], sizes: list[int]) -> list[int]:
    """Each image's share of its sample's keep count: floor(k n_i / N) plus one for the images with the largest
    remainders (ties: the earlier image), so the shares add up to k exactly."""
    shares = [0] * len(sizes)
    for b, k in enumerate(counts):
        mine = [i for i, s in enumerate(sample_of) if s == b]
        total = sum(sizes[i] for i in mine)
        if not mine:
            continue
        for i in mine:
            shares[i] = k * sizes[i] // total
        left = k - sum(shares[i] for i in mine)
        for i in sorted(mine, key=lambda i: (-(k * sizes[i] % total), i))[:left]:
            shares[i] += 1
    return shares
