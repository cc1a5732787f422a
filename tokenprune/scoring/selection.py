"""One selection API for every way of choosing the survivors of a cut.

``compile(scorer=NAME)`` names a *selector* (:class:`tokenprune.plugins.contracts.Selector`): an entry of the
``selector`` registry (the drop-selectors of :mod:`tokenprune.scoring.selectors`), or a ranking scorer of the
``scorer`` registry, which :func:`ranking_selector` turns into a selector keeping its top ``counts[b]`` scores.
"""

from __future__ import annotations

import difflib

import torch

from tokenprune.errors import ScheduleError, TokenPruneError, describe
from tokenprune.plugins.contracts import Scorer, Selector
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
    """``keep`` if it is a (B, n) bool mask True at exactly ``counts[b]`` still-kept vision slots, else an error."""
    where = f"selector {name!r} at the cut before layer {ctx.layer}"
    shape = tuple(ctx.vision.shape)
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != shape:
        got = f"{tuple(keep.shape)} {keep.dtype}" if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise SelectorOutputError(describe(f"it returned {got}", where, f"a {shape} bool keep mask",
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
