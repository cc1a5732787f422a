"""The merging selectors of :mod:`tokenprune.selectors`, registered for cuts inside the language model.

They answer with a :class:`~tokenprune.plugins.contracts.CutMerge`: the cut folds every token they absorb into
its survivor (the size-weighted mean of the hidden states entering the cut, at the survivor's position), see
``rewrites/merging.py``.
"""

from __future__ import annotations

import torch

from tokenprune import selectors
from tokenprune.plugins.contracts import CutMerge
from tokenprune.spec import resolve_module

from .context import ScoreContext
from .drop_selectors import drop_selector, pack


def key_metric(ctx: ScoreContext, which: torch.Tensor) -> torch.Tensor:
    """(B, N, D_h) ToMe's similarity metric of the slots ``which`` (B, n), packed as :func:`pack` packs them:
    the scoring layer's keys before rotary embedding, averaged over key heads. Rotary embedding turns keys by
    position, which would make two equal tokens at different places look unlike; ToMe's keys carry no rotation.
    Computed from the scoring layer's own input norm and key projection (the same with or without a KV cache, so
    cached and uncached runs merge alike); a layer without a plain ``k_proj`` (spec ``attention.qk``) compares
    the hidden states entering the cut instead. A cut before layer 0 has no scoring layer: there the keys are
    layer 0's own, of the embeddings entering it."""
    spec = ctx.spec
    layer, states = (ctx.scoring_layer, ctx.hidden_in) if ctx.scoring_layer is not None else (ctx.next_layer,
                                                                                               ctx.hidden_out)
    if ctx.plugins.qk is not None:
        return pack(which, ctx.entering_states()).features
    hidden = pack(which, ctx.plugins.hidden_states.attention_input(layer, states)).features  # (B, N, D)
    norm = spec.layer.input_norm
    x = resolve_module(layer, norm, "layer.input_norm")(hidden) if norm else hidden
    keys = resolve_module(layer, spec.layer.k_proj, "layer.k_proj")(x)  # (B, N, H_kv * D_h)
    attn = resolve_module(layer, spec.layer.attention, "layer.attention")
    head_dim = int(getattr(attn, spec.attention.head_dim))
    return keys.view(*keys.shape[:2], -1, head_dim).mean(dim=2)  # (B, N, D_h)


@drop_selector("tome")
def tome(ctx: ScoreContext, counts: torch.Tensor) -> CutMerge:
    """ToMe: bipartite soft matching on the scoring layer's keys, in rounds until ``counts[b]`` tokens remain;
    merged tokens are averaged weighted by the original tokens each already stands for (``ctx.sizes``)."""
    candidates = ctx.vision & ctx.valid  # (B, n)
    view = pack(candidates)
    sizes = ctx.sizes.gather(1, view.slots)  # (B, N)
    with torch.no_grad():
        packed_owner = selectors.tome_merge_to(key_metric(ctx, candidates), view.valid, counts, sizes)  # (B, N)
    owner = torch.full_like(ctx.positions, -1)
    slot_owner = torch.where(packed_owner >= 0, view.slots.gather(1, packed_owner.clamp_min(0)), -1)
    owner.scatter_(1, view.slots, torch.where(view.valid, slot_owner, -1))
    return CutMerge(owner, ctx.sizes)
