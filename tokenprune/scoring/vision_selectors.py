"""Selectors that read the vision encoder (``ctx.vision_side``, spec key ``vision_side``): FasterVLM's [CLS]
attention ranking, VisionZip's dominant + contextual tokens, and the spatial baselines on each image's grid.

They work at any cut: a slot's tower values are found through its original prompt position, so a cut after
earlier cuts reads the values of the tokens it still holds. The grid selectors need whole grids, i.e. a cut
that still holds every vision token (the first cut).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from tokenprune import selectors
from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register
from tokenprune.plugins.contracts import CutMerge
from tokenprune.selectors._common import ranks_descending

from .context import ScoreContext
from .drop_selectors import vision_view


def vision_selector(name: str):
    """Register a selector that reads the vision tower (the capture is installed at compile for it). A cut that
    keeps every candidate or none chooses nothing and reads nothing (the compile self-check's probe keeps all).
    The self-check's pruning probe marks text tokens as vision tokens and runs no tower: there the first
    ``counts[b]`` candidates stand in, since that probe checks only that the call prunes."""

    def deco(select):
        @functools.wraps(select)
        def guarded(ctx: ScoreContext, counts: torch.Tensor):
            candidates = ctx.vision & ctx.valid  # (B, n)
            if not bool((counts > 0).any()):
                return torch.zeros_like(candidates)
            if torch.equal(counts.to(candidates.device), candidates.sum(dim=1)):
                return candidates
            capture = ctx.vision_capture
            if capture is not None and capture.probe and not capture.calls:
                return candidates & (candidates.long().cumsum(dim=1) <= counts[:, None].to(candidates.device))
            return select(ctx, counts)

        guarded.needs_vision_side = True
        return register("selector", name)(guarded)

    return deco


@vision_selector("fastervlm")
def fastervlm(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """FasterVLM: keep the tokens that received the most [CLS] attention in the vision tower (mean attention over
    the tower's queries for towers without [CLS]); ties go to the earlier slot."""
    candidates = ctx.vision & ctx.valid
    scores = ctx.vision_side.attention()  # (B, n)
    ctx.scores = scores
    rank = ranks_descending(scores.masked_fill(~candidates, -float("inf")))  # (B, n)
    return candidates & (rank < counts[:, None].to(rank.device))


@vision_selector("visionzip")
def visionzip(ctx: ScoreContext, counts: torch.Tensor) -> CutMerge:
    """VisionZip: dominant tokens by tower attention, the rest merged into contextual tokens by the similarity of
    the hidden states entering the cut (the paper compares the tower layer's keys)."""
    view = vision_view(ctx)
    attention = ctx.vision_side.attention().gather(1, view.slots)  # (B, N) packed
    merge = selectors.visionzip(view.features, view.valid, counts.to(view.valid.device), attention)
    return CutMerge(_owner_slots(merge, view.slots, ctx.vision.shape[1]), getattr(ctx, "sizes", None))


@vision_selector("grid-downsample")
def grid_downsample(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """Even spatial downsampling of each image's grid of language-model tokens (counts split over a sample's images
    by largest remainder)."""
    images = ImageRows.of(ctx, counts, "grid-downsample")
    chosen = selectors.grid_downsample(images.valid, images.counts, images.grid)
    return images.keep_mask(chosen.keep_mask(images.valid.shape[1]))


@vision_selector("grid-pool")
def grid_pool(ctx: ScoreContext, counts: torch.Tensor) -> CutMerge:
    """Pooling of each image's grid around the points grid-downsample keeps: every other token merges into its
    nearest kept point (counts split over a sample's images by largest remainder)."""
    images = ImageRows.of(ctx, counts, "grid-pool")
    states = ctx.entering_states()  # (B, n, D)
    slots = images.slots.clamp_max(states.shape[1] - 1)
    features = states[images.sample[:, None], slots]  # (G, P, D)
    merge = selectors.grid_pool_around(features, images.valid, images.counts, images.grid)
    owner_in_image = torch.where(merge.destination >= 0,
                                 merge.indices.gather(1, merge.destination.clamp_min(0)), -1)  # (G, P) patch
    owner_slot = torch.where(owner_in_image >= 0, images.slots.gather(1, owner_in_image.clamp_min(0)), -1)
    owner = torch.full(images.shape, -1, dtype=torch.long, device=ctx.vision.device)
    real = images.valid
    owner[images.sample[:, None].expand_as(slots)[real], images.slots[real]] = owner_slot[real]
    return CutMerge(owner, getattr(ctx, "sizes", None))


def _owner_slots(merge: selectors.Merge, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(B, num_slots) long owner slot of each packed token of a Merge over ``slots`` (-1: dropped/elsewhere)."""
    survivor = torch.where(merge.destination >= 0, merge.indices.gather(1, merge.destination.clamp_min(0)), -1)
    owner_packed = torch.where(survivor >= 0, slots.gather(1, survivor.clamp_min(0)), -1)  # (B, N)
    owner = torch.full((slots.shape[0], num_slots), -1, dtype=torch.long, device=slots.device)
    return owner.scatter_(1, slots, owner_packed)  # packed slots are distinct: padding writes its own -1


@dataclass(frozen=True)
class ImageRows:
    """A cut's vision tokens regrouped one image per row, in grid order, with each image's share of its sample's
    keep count. Needs whole grids: every token of each image still present."""

    sample: torch.Tensor  # (G,) long: the sample each image belongs to
    slots: torch.Tensor  # (G, P) long: context slot of each of the image's tokens (padding: n)
    valid: torch.Tensor  # (G, P) bool
    counts: torch.Tensor  # (G,) long: tokens the image keeps
    grid: torch.Tensor  # (G, 2) long: (rows, columns)
    shape: tuple[int, int]  # (B, n) of the context

    @classmethod
    def of(cls, ctx: ScoreContext, counts: torch.Tensor, name: str) -> ImageRows:
        side = ctx.vision_side
        candidates = ctx.vision & ctx.valid  # (B, n)
        image, patch = side.image(), side.patch()  # (B, n)
        grids, sizes = side.grid(), side.counts()
        b_idx, s_idx = torch.nonzero(candidates, as_tuple=True)
        of_token = image[b_idx, s_idx]
        present = torch.bincount(of_token, minlength=len(sizes)).tolist()
        owners = dict(zip(of_token.tolist(), b_idx.tolist()))  # image -> its sample
        used = sorted(owners)
        bad = [g for g in used if present[g] != sizes[g] or grids[g] is None]
        if bad:
            g = bad[0]
            raise UnsupportedError(describe(
                f"image {g} has {present[g]} of its {sizes[g]} tokens at this cut"
                + ("" if grids[g] is not None else " and no patch grid"),
                f"selector {name!r} at the cut before layer {ctx.layer} (spec {ctx.spec.name!r})",
                "each image's whole patch grid: the first cut of the schedule, on a tower whose tokens form a grid",
                "cut with this selector only once (the schedule's first cut), or use 'fastervlm' / 'random-keep'"))
        row_of = {g: r for r, g in enumerate(used)}
        sample = torch.tensor([owners[g] for g in used], dtype=torch.long, device=candidates.device)
        width = max((sizes[g] for g in used), default=0)
        n = candidates.shape[1]
        slots = torch.full((len(used), width), n, dtype=torch.long, device=candidates.device)
        rows = torch.tensor([row_of[g] for g in of_token.tolist()], dtype=torch.long,
                            device=candidates.device)
        slots[rows, patch[b_idx, s_idx]] = s_idx
        valid = slots < n
        shares = _split_counts(counts.tolist(), [owners[g] for g in used], [sizes[g] for g in used])
        grid = torch.tensor([list(grids[g]) for g in used], dtype=torch.long, device=candidates.device)
        return cls(sample, slots, valid, torch.tensor(shares, dtype=torch.long, device=candidates.device),
                   grid.reshape(-1, 2), tuple(candidates.shape))

    def keep_mask(self, keep_rows: torch.Tensor) -> torch.Tensor:
        """(B, n) bool context keep mask from a (G, P) keep mask over the image rows."""
        keep = torch.zeros(self.shape, dtype=torch.bool, device=keep_rows.device)
        real = keep_rows & self.valid
        keep[self.sample[:, None].expand_as(self.slots)[real], self.slots[real]] = True
        return keep


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
