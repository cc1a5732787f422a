"""The drop-selectors of :mod:`tokenprune.selectors`, registered for the cuts of a schedule.

Each one sees the cut's still-kept vision tokens packed into a padded batch (:func:`vision_view`) and uses as
features the hidden states entering the cut (:meth:`ScoreContext.entering_states`). At a cut before the first
decoder layer (``keep_ratio[0] < 1``, where the papers mostly select) those are the embeddings entering layer 0:
the projector's output merged into the text embeddings, as layer 0's attention reads them. At deeper cuts the
same algorithms act on the language model's hidden states. DART ranks its pivots by the
scoring layer's keys (by the entering hidden states' norm at layer 0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from tokenprune import selectors
from tokenprune.plugins import register
from tokenprune.selectors._common import keep_mask_of, valid_order
from tokenprune.selectors.dart import key_norms

from .attention import layer_keys
from .context import ScoreContext


@dataclass(frozen=True)
class PackedTokens:
    """Some slots of each sample packed to the front, in slot order, padded to the longest sample."""

    slots: torch.Tensor  # (B, N) long: context slot of each packed token (distinct; padding holds other slots)
    valid: torch.Tensor  # (B, N) bool: a real packed token
    features: torch.Tensor | None  # (B, N, D) the hidden states entering the cut at those slots, if asked for

    def unpack(self, selection: selectors.Selection, num_slots: int) -> torch.Tensor:
        """(B, num_slots) bool keep mask of the context from a selection over the packed tokens."""
        packed_keep = keep_mask_of(selection.indices, selection.mask, self.slots.shape[1])  # (B, N)
        keep = torch.zeros(self.slots.shape[0], num_slots, dtype=torch.bool, device=self.slots.device)
        return keep.scatter_(1, self.slots, packed_keep & self.valid)


def pack(which: torch.Tensor, states: torch.Tensor | None = None) -> PackedTokens:
    """The slots where ``which`` (B, n) is True, with their rows of ``states`` (B, n, D) when given."""
    count = which.sum(dim=1)  # (B,)
    width = int(count.max()) if which.shape[0] else 0
    slots = valid_order(which)[:, :width]  # (B, N) a permutation's prefix: distinct slots
    valid = torch.arange(width, device=which.device)[None, :] < count[:, None]  # (B, N)
    features = None if states is None else states.gather(1, slots[:, :, None].expand(-1, -1, states.shape[-1]))
    return PackedTokens(slots, valid, features)


def vision_view(ctx: ScoreContext) -> PackedTokens:
    """The still-kept vision tokens of the cut, with the hidden states entering it."""
    return pack(ctx.vision & ctx.valid, ctx.entering_states())


def drop_selector(name: str):
    """Register a selector; a cut where every sample keeps no vision token skips it (nothing to choose)."""

    def deco(select):
        @functools.wraps(select)
        def guarded(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
            if not bool((counts > 0).any()):
                return torch.zeros_like(ctx.vision)
            return select(ctx, counts)

        return register("selector", name)(guarded)

    return deco


@drop_selector("divprune")
def divprune(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """DivPrune: greedy max-min cosine diversity of the hidden states entering the cut."""
    view = vision_view(ctx)
    return view.unpack(selectors.divprune(view.features, view.valid, counts), ctx.vision.shape[1])


@drop_selector("dart")
def dart(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """DART: pivots by key norm (:func:`pivot_key_norms`), 4 vision and 4 prompt-text pivots, then the tokens
    whose hidden states entering the cut are least similar to them."""
    states, norms = ctx.entering_states(), pivot_key_norms(ctx)   # (B, n, D), (B, n)
    view, text = vision_view(ctx), pack(ctx.text, states)
    chosen = selectors.dart(view.features, view.valid, counts, pivot_scores=norms.gather(1, view.slots),
                            text=text.features, text_pivot_scores=norms.gather(1, text.slots),
                            text_valid=text.valid)
    return view.unpack(chosen, ctx.vision.shape[1])


def pivot_key_norms(ctx: ScoreContext) -> torch.Tensor:
    """(B, n) DART's pivot ranking: the L1 norm of each slot's keys over every key head of the scoring layer.

    The keys are taken before RoPE (projected and normed as the layer does, so recomputed, never read from the
    cache): RoPE rotates channel pairs, which keeps their L2 norm but not their L1 norm, so rotated keys would
    rank a token by its absolute position and a left-padded sample would pick other pivots than alone. A cut
    with no scoring layer (before the first decoder layer), or whose scoring layer reads keys another layer
    shared (rotated), ranks by the L1 norm of the hidden states entering the cut instead."""
    if ctx.scoring_layer is not None:
        keys, found = layer_keys(ctx.plugins, ctx.scoring_layer, ctx.hidden_in, None, key_policy="recompute",
                                 shared_kv=ctx.shared_kv)   # (B, H_kv, n, D_h)
        if found.source != "shared":
            ctx.key_source = "recompute: the scoring layer's keys before RoPE (DART pivots)"
            return key_norms(keys.transpose(1, 2).flatten(2))
    ctx.key_source = "none: DART pivots by the L1 norm of the hidden states entering the cut"
    return key_norms(ctx.entering_states())


@drop_selector("cdpruner")
def cdpruner(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """CDPruner: greedy MAP of the DPP conditioned on the prompt's text tokens (their hidden states at the cut)."""
    view, text = vision_view(ctx), pack(ctx.text, ctx.entering_states())
    chosen = selectors.cdpruner(view.features, view.valid, counts, text.features, text.valid)
    return view.unpack(chosen, ctx.vision.shape[1])


@drop_selector("random-keep")
def random_keep(ctx: ScoreContext, counts: torch.Tensor) -> torch.Tensor:
    """Uniformly random survivors, drawn per sample from ``compile(seed=)`` and the cut's layer only, so a sample
    keeps the same tokens alone or in any batch."""
    candidates = ctx.vision & ctx.valid  # (B, n)
    view = pack(candidates)
    chosen = selectors.random_keep(view.valid, counts, seeds=ctx.seed * 1_000_003 + ctx.layer)
    return view.unpack(chosen, ctx.vision.shape[1])

