"""Built-in scorers. Each maps a :class:`ScoreContext` to scores (B, n) fp32; higher survives.

Only the scores at vision slots matter; the caller masks the rest.
"""

from __future__ import annotations

import torch

from tokenprune.registry import register

from .attention import attention_probs
from .context import ScoreContext

DEFAULT_SCORER = "last-token-attention"


def _last_query(ctx: ScoreContext) -> torch.Tensor:
    # Prompts are left-padded, so the last prompt token is the last slot of every sample.
    return torch.tensor([ctx.hidden_in.shape[1] - 1], device=ctx.hidden_in.device)


@register("scorer", "last-token-attention")
def last_token_attention(ctx: ScoreContext) -> torch.Tensor:
    """FastV: attention of the last prompt token in the layer before the cut, averaged over heads."""
    probs = attention_probs(ctx.spec, ctx.scoring_layer, ctx.hidden_in, ctx.rope, ctx.mask,
                            ctx.positions, ctx.valid, _last_query(ctx))  # (B, 1, n)
    return probs[:, 0]


@register("scorer", "next-layer-attention")
def next_layer_attention(ctx: ScoreContext) -> torch.Tensor:
    """PyramidDrop: the *next* layer's projections on the current hidden state, last prompt token as query."""
    probs = attention_probs(ctx.spec, ctx.next_layer, ctx.hidden_out, ctx.next_rope, ctx.next_mask,
                            ctx.positions, ctx.valid, _last_query(ctx))  # (B, 1, n)
    return probs[:, 0]


@register("scorer", "text-mean-attention")
def text_mean_attention(ctx: ScoreContext) -> torch.Tensor:
    """Attention in the layer before the cut, averaged over heads and over every real text query."""
    n = ctx.hidden_in.shape[1]
    text_slots = ~ctx.vision & ctx.valid  # (B, n)
    query_index = torch.nonzero(text_slots.any(dim=0)).flatten()  # (Q,) slots that are text in some sample
    probs = attention_probs(ctx.spec, ctx.scoring_layer, ctx.hidden_in, ctx.rope, ctx.mask,
                            ctx.positions, ctx.valid, query_index)  # (B, Q, n)
    weight = text_slots[:, query_index].float()  # (B, Q): only a sample's own text queries count
    # A query sees no token after it, so the mean is taken over the queries that can see each key.
    sees = (ctx.positions[:, query_index, None] >= ctx.positions[:, None, :]).float() * weight[:, :, None]
    total = (probs * sees).sum(dim=1)  # (B, n)
    return total / sees.sum(dim=1).clamp_min(1.0) if n else total


@register("scorer", "random")
def random_scores(ctx: ScoreContext) -> torch.Tensor:
    """Seeded random baseline, drawn per position in the unpadded prompt (so it is batch invariant)."""
    prompt_pos = ctx.positions - ctx.pad_offset[:, None]  # (B, n) index in the sample's own prompt
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed * 1_000_003 + ctx.layer)
    table = torch.rand(int(prompt_pos.max().item()) + 1, generator=gen).to(ctx.hidden_in.device)
    return table[prompt_pos.clamp_min(0)]
