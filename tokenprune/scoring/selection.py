"""One selection API for every way of choosing the survivors of a cut.

``compile(scorer=NAME)`` names a *selector* (:class:`tokenprune.plugins.contracts.Selector`): an entry of the
``selector`` registry (the drop-selectors of :mod:`tokenprune.scoring.selectors`), or a ranking scorer of the
``scorer`` registry, which :func:`ranking_selector` turns into a selector keeping its top ``counts[b]`` scores.
A selector answers with a keep mask or with a :class:`~tokenprune.plugins.contracts.CutMerge` (its survivors are
the kept tokens; :func:`merge_owner` gives what the cut merges).
"""

from __future__ import annotations

import difflib

import torch

from tokenprune.errors import ScheduleError, TokenPruneError, describe
from tokenprune.plugins.contracts import CutMerge, Scorer, Selector
from tokenprune.plugins.registry import ENTRY_POINT_GROUP, load_entry_points, registry

from .context import ScoreContext


class SelectorOutputError(TokenPruneError, ValueError):
    """A selector returned something other than a keep mask of exactly the asked counts."""


def ranking_selector(scorer: Scorer) -> Selector:
    """A selector keeping each sample's top ``counts[b]`` vision slots by ``scorer``; ties go to the lower slot."""

    def select(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
        scores = scorer(ctx).float()  # (B, n)
        ctx.scores = scores
        bsz, n = scores.shape
        candidates = ctx.vision & ctx.valid  # (B, n)
        masked = scores.masked_fill(~candidates, float("-inf"))
        order = torch.sort(masked, dim=1, descending=True, stable=True).indices  # (B, n)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n, device=scores.device).expand(bsz, n))
        return candidates & (rank < counts[:, None])  # (B, n)

    select.__qualname__ = f"ranking_selector({getattr(scorer, '__qualname__', scorer)})"
    select.scorer = scorer  # what it ranks by (ResolvedSpec.scorer)
    return select


def find_selector(name: str, where: str = "compile(scorer=)") -> Selector:
    """The selector registered as ``name``, or the ranking selector of the scorer ``name``."""
    selectors, scorers = registry("selector"), registry("scorer")
    if name not in selectors and name not in scorers:
        load_entry_points()
    if name in selectors:
        return selectors.get(name)
    if name in scorers:
        return ranking_selector(scorers.get(name))
    near = difflib.get_close_matches(name, scorers.names() + selectors.names(), n=3)
    raise ScheduleError(describe(
        f"unknown scorer {name!r}", where,
        f"one of {scorers.names()} (ranking scorers) or {selectors.names()} (selectors)"
        + (f" (did you mean {near}?)" if near else ""),
        f"fix the name, or install the {ENTRY_POINT_GROUP!r} entry point that registers it"))


def check_keep(keep, ctx: ScoreContext, counts: torch.Tensor, name: str) -> torch.Tensor:
    """``keep`` if it is a (B, n) bool mask True at exactly ``counts[b]`` still-kept vision slots, else an error.
    A :class:`CutMerge` is checked (:func:`_check_merge`) and its survivors are the mask."""
    where = f"selector {name!r} at the cut before layer {ctx.layer}"
    if isinstance(keep, CutMerge):
        keep = _check_merge(keep, ctx, where)
    shape = tuple(ctx.vision.shape)
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != shape:
        raise SelectorOutputError(describe(f"it returned {_described(keep)}", where, f"a {shape} bool keep mask",
                                           "return one True per kept vision slot of the context"))
    outside = keep & ~(ctx.vision & ctx.valid)
    kept = keep.sum(dim=1)  # (B,)
    if bool(outside.any()) or not torch.equal(kept, counts.to(kept.device)):
        raise SelectorOutputError(describe(
            f"it kept {kept.tolist()} tokens for counts {counts.tolist()}"
            + (" and marked slots that hold no still-kept vision token" if bool(outside.any()) else ""), where,
            "exactly counts[b] True entries per sample, all at ctx.vision & ctx.valid",
            "keep exactly the asked number of vision tokens"))
    return keep


def merge_owner(merge: CutMerge, ctx: ScoreContext) -> tuple[torch.Tensor, torch.Tensor]:
    """A checked ``merge``'s owners (B, n) long, -1 outside the still-kept vision slots (whose entries the
    contract ignores), and the sizes (B, n) fp32 its means weight by (1 where it gives none)."""
    candidates = ctx.vision & ctx.valid  # (B, n)
    owner = _owner_at(candidates, merge.owner)
    sizes = torch.ones(owner.shape, device=owner.device) if merge.sizes is None else merge.sizes.float()
    return owner, torch.where(candidates, sizes.to(owner.device), 0.0)


def _owner_at(candidates: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(B, n) long ``owner`` at the still-kept vision slots ``candidates``, -1 elsewhere."""
    return torch.where(candidates, owner.to(candidates.device).long(), -1)


def _check_merge(merge: CutMerge, ctx: ScoreContext, where: str) -> torch.Tensor:
    """(B, n) bool survivors of ``merge``, after checking that every owner names a surviving still-kept vision
    slot and every size is a positive finite number."""
    shape = tuple(ctx.vision.shape)
    owner, sizes = merge.owner, merge.sizes
    if not isinstance(owner, torch.Tensor) or owner.is_floating_point() or owner.dtype == torch.bool \
            or tuple(owner.shape) != shape:
        raise SelectorOutputError(describe(
            f"its CutMerge owner is {_described(owner)}", where, f"a {shape} long tensor of slot indices",
            "name, per still-kept vision slot, itself (survives), a surviving slot (merged into it) or -1 (dropped)"))
    candidates = ctx.vision & ctx.valid  # (B, n)
    owner = _owner_at(candidates, owner)
    n = shape[1]
    slots = torch.arange(n, device=owner.device)
    survivors = candidates & (owner == slots)  # (B, n)
    target = owner.clamp(0, n - 1)
    bad = candidates & (owner != -1) & ((owner < 0) | (owner >= n) | ~survivors.gather(1, target))
    if bool(bad.any()):
        b, slot = (int(i) for i in bad.nonzero()[0])
        raise SelectorOutputError(describe(
            f"its CutMerge sends slot {slot} of sample {b} to {int(owner[b, slot])}, which is not a surviving "
            "still-kept vision slot", where,
            "owner[b, i] in {i, -1} or a slot j with ctx.vision & ctx.valid and owner[b, j] == j",
            "merge tokens only into survivors (slots that own themselves); use -1 to drop a token"))
    if sizes is not None:
        if not isinstance(sizes, torch.Tensor) or tuple(sizes.shape) != shape:
            raise SelectorOutputError(describe(
                f"its CutMerge sizes are {_described(sizes)}", where, f"None or a {shape} tensor",
                "pass ctx.sizes (the original tokens each slot stands for) or None"))
        sizes = sizes.to(owner.device).float()
        if not bool(((sizes > 0) & sizes.isfinite())[candidates & (owner >= 0)].all()):
            raise SelectorOutputError(describe(
                "its CutMerge sizes hold a zero, negative or non-finite value at a merged slot", where,
                "positive finite sizes at every still-kept vision slot that survives or is merged",
                "pass ctx.sizes or None"))
    return survivors


def _described(value) -> str:
    return f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
