"""Selectors that read the vision encoder (``ctx.vision_side``, spec key ``vision_side``): FasterVLM's [CLS]
attention ranking, VisionZip's dominant + contextual tokens, and the spatial baselines on each image's grid.

They work at any cut: a slot's tower values are found through its original prompt position, so a cut after
earlier cuts reads the values of the tokens it still holds. The grid selectors need whole grids, i.e. a cut
that still holds every vision token (the first cut); ``image_grids`` lays the images out as grid parts.
"""

from __future__ import annotations

import functools

import torch

from tokenprune import selectors
from tokenprune.plugins import register
from tokenprune.plugins.contracts import CutMerge
from tokenprune.selectors._common import ranks_descending

from .context import ScoreContext
from .drop_selectors import vision_view
from .image_grids import grid_parts


def vision_selector(name: str, first_cut_only: bool = False):
    """Register a selector that reads the vision tower (the capture is installed at compile for it);
    ``first_cut_only``: it needs every vision token, so a schedule may cut with it only once (checked at compile). A cut that
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
        guarded.first_cut_only = first_cut_only
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


# Each kind of grid part and the tensor functions that downsample it / pool it around the downsampled points.
_GRID_KINDS = ((selectors.grid_downsample, selectors.grid_pool_around),
               (selectors.marked_grid_downsample, selectors.marked_grid_pool_around))


@vision_selector("grid-downsample", first_cut_only=True)
def grid_downsample(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """Even spatial downsampling of each image's grid of language-model tokens (counts split over a sample's images
    by largest remainder; an any-res image's base and crop grids each downsampled, the crop grid's newlines kept
    with their rows)."""
    keep = torch.zeros_like(ctx.vision)
    for part, (downsample, _) in zip(grid_parts(ctx, counts, "grid-downsample"), _GRID_KINDS):
        if part.sample.numel():
            chosen = downsample(part.valid, part.counts, part.grid)
            keep |= part.keep_mask(chosen.keep_mask(part.valid.shape[1]))
    return keep


@vision_selector("grid-pool", first_cut_only=True)
def grid_pool(ctx: ScoreContext, counts: torch.Tensor) -> CutMerge:
    """Pooling of each image's grid around the points grid-downsample keeps: every other token merges into its
    nearest kept point (any-res newlines into the nearest kept newline)."""
    states = ctx.entering_states()  # (B, n, D)
    owner = torch.full(tuple(ctx.vision.shape), -1, dtype=torch.long, device=ctx.vision.device)
    for part, (_, pool) in zip(grid_parts(ctx, counts, "grid-pool"), _GRID_KINDS):
        if part.sample.numel():
            features = states[part.sample[:, None], part.slots.clamp_max(states.shape[1] - 1)]  # (R, P, D)
            part.owner_slots(pool(features, part.valid, part.counts, part.grid), owner)
    return CutMerge(owner, getattr(ctx, "sizes", None))


def _owner_slots(merge: selectors.Merge, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(B, num_slots) long owner slot of each packed token of a Merge over ``slots`` (-1: dropped/elsewhere)."""
    survivor = torch.where(merge.destination >= 0, merge.indices.gather(1, merge.destination.clamp_min(0)), -1)
    owner_packed = torch.where(survivor >= 0, slots.gather(1, survivor.clamp_min(0)), -1)  # (B, N)
    owner = torch.full((slots.shape[0], num_slots), -1, dtype=torch.long, device=slots.device)
    return owner.scatter_(1, slots, owner_packed)  # packed slots are distinct: padding writes its own -1
