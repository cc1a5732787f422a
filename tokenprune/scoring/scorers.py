"""Built-in scorers. Each maps a :class:`ScoreContext` to scores (B, n) fp32; higher survives.

Only the scores at vision slots matter; the caller masks the rest.
"""

from __future__ import annotations

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register, registry

from .attention import attention_probs
from .context import ScoreContext

DEFAULT_SCORER = "last-token-attention"


def _last_query(ctx: ScoreContext) -> torch.Tensor:
    """(B, 1) slot of each sample's last prompt token (the last slot unless a prompt end was given)."""
    hits = ctx.positions == ctx.query_position[:, None]  # (B, n): exactly one slot per sample
    return hits.float().argmax(dim=1, keepdim=True)


def _scoring_layer_probs(ctx: ScoreContext, query_slots: torch.Tensor) -> torch.Tensor:
    """(B, Q, n) attention in the layer before the cut; that layer has run, so its keys may be in the cache."""
    require_scoring_layer(ctx)
    probs, found = attention_probs(ctx.plugins, ctx.scoring_layer, ctx.hidden_in, ctx.rope, ctx.mask, ctx.positions,
                                   ctx.valid, query_slots, cache=ctx.cache, key_policy=ctx.key_policy,
                                   shared_kv=ctx.shared_kv, position_ids=ctx.position_ids)
    ctx.key_source = f"{found.source}: {found.reason}"
    return probs


def layer0_selectors() -> list[str]:
    """Registered selectors and scorers that need no layer before the cut (none marked
    :func:`needs_scoring_layer`), so they can act on the embeddings entering the first layer."""
    names = [(name, registry(kind).get(name)) for kind in ("selector", "scorer") for name in registry(kind).names()]
    return sorted(name for name, entry in names if not getattr(entry, "needs_scoring_layer", False))


def _no_scoring_layer(name: str, spec_name: str) -> UnsupportedError:
    return UnsupportedError(describe(
        f"scorer {name!r} ranks by the attention of the layer before the cut, and a cut before layer 0 has none",
        f"the cut before layer 0 (keep_ratio[0] < 1, spec {spec_name!r})",
        "a cut at layer 1 or later for scorers that read the previous layer's attention",
        f"start the schedule at keep_ratio[0] = 1.0, or use a selector that works before the first layer: "
        f"{', '.join(layer0_selectors())}"))


def needs_scoring_layer(scorer):
    """Mark a scorer that reads the layer before the cut (refused at a cut before layer 0, at compile time)."""
    scorer.needs_scoring_layer = True
    return scorer


def check_first_layer_cut(plugins, cuts) -> None:
    """At compile: refuse a cut before layer 0 for a ranking scorer marked :func:`needs_scoring_layer`."""
    if 0 in cuts and getattr(plugins.scorer, "needs_scoring_layer", False):
        raise _no_scoring_layer(plugins.scorer_name, plugins.spec.name)


def first_cut_only(name: str) -> bool:
    """Whether the registered selector or scorer ``name`` needs every vision token (one cut per schedule)."""
    kind = "selector" if name in registry("selector").names() else "scorer"
    return bool(getattr(registry(kind).get(name), "first_cut_only", False))


def check_single_cut(plugins, cuts) -> None:
    """At compile: refuse a schedule that cuts more than once with a selector that needs every vision token."""
    if len(cuts) > 1 and getattr(plugins.selector, "first_cut_only", False):
        raise UnsupportedError(describe(
            f"selector {plugins.scorer_name!r} at {len(cuts)} cuts (before layers {list(cuts)})",
            f"compile(scorer={plugins.scorer_name!r}, spec {plugins.spec.name!r})",
            "one cut: the selector needs each image's whole patch grid, which only the first cut still holds",
            "use a one-cut schedule (e.g. Schedule.fastv, or keep_ratio[0] < 1 and no later cut), or a selector "
            "that works at any cut such as 'fastervlm', 'divprune' or 'random-keep'"))


def require_scoring_layer(ctx: ScoreContext) -> None:
    """At run time, for any scorer reading the previous layer (plug-ins included): refuse a cut before layer 0."""
    if ctx.scoring_layer is None:
        raise _no_scoring_layer(ctx.plugins.scorer_name, ctx.spec.name)


@register("scorer", "last-token-attention")
@needs_scoring_layer
def last_token_attention(ctx: ScoreContext) -> torch.Tensor:
    """FastV: attention of the last prompt token in the layer before the cut, averaged over heads."""
    return _scoring_layer_probs(ctx, _last_query(ctx))[:, 0]  # (B, n)


@register("scorer", "next-layer-attention")
def next_layer_attention(ctx: ScoreContext) -> torch.Tensor:
    """PyramidDrop: the *next* layer's projections on the current hidden state, last prompt token as query.

    The next layer has not run yet, so its keys are always recomputed."""
    probs, found = attention_probs(ctx.plugins, ctx.next_layer, ctx.hidden_out, ctx.next_rope, ctx.next_mask,
                                   ctx.positions, ctx.valid, _last_query(ctx),
                                   shared_kv=ctx.shared_kv,  # (B, 1, n): the next layer reads the same mapping
                                   position_ids=ctx.position_ids)  # the same ids: no cut between the two
    ctx.key_source = f"{found.source}: the next layer has not run"
    return probs[:, 0]


@register("scorer", "text-mean-attention")
@needs_scoring_layer
def text_mean_attention(ctx: ScoreContext) -> torch.Tensor:
    """Attention in the layer before the cut, averaged over heads and over every real text query."""
    bsz, n = ctx.vision.shape
    # Real text slots of the prompt (not past its end), queried in every sample at the same slots.
    text_slots = ~ctx.vision & ctx.valid & (ctx.positions <= ctx.query_position[:, None])  # (B, n)
    shared = torch.nonzero(text_slots.any(dim=0)).flatten()  # (Q,) slots that are prompt text in some sample
    query_slots = shared.expand(bsz, -1)  # (B, Q)
    probs = _scoring_layer_probs(ctx, query_slots)  # (B, Q, n)
    weight = text_slots[:, shared].float()  # (B, Q): only a sample's own text queries count
    # A query sees no token after it, so the mean is taken over the queries that can see each key.
    q_pos = ctx.positions[:, shared]  # (B, Q)
    sees = (q_pos[:, :, None] >= ctx.positions[:, None, :]).float() * weight[:, :, None]
    total = (probs * sees).sum(dim=1)  # (B, n)
    return total / sees.sum(dim=1).clamp_min(1.0) if n else total


@register("scorer", "random")
def random_scores(ctx: ScoreContext) -> torch.Tensor:
    """Seeded random baseline, drawn per position in the unpadded prompt (so it is batch invariant)."""
    prompt_pos = ctx.positions - ctx.pad_offset[:, None]  # (B, n) index in the sample's own prompt
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed * 1_000_003 + ctx.layer)
    table = torch.rand(int(prompt_pos.max().item()) + 1, generator=gen).to(ctx.positions.device)
    return table[prompt_pos.clamp_min(0)]
