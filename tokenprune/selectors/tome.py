"""ToMe bipartite soft matching (Bolya et al., ICLR 2023, arXiv 2210.09461) as a merge primitive.

The sample's tokens are split alternately (in index order among its valid slots) into set A (even positions)
and set B (odd positions). Every A token is matched to its most cosine-similar B token; the ``r`` A tokens with
the most similar matches are merged into their B token, the others stay. Merging is the size-weighted average
(``sizes`` counts the original tokens each input stands for), and the merged token keeps the B token's slot.
Ties go to the lower index.

Cost: O(N^2 D / 4) for the A-B similarities.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Merge, SelectorInputError, check_selector_inputs, check_shape, check_valid, merge_into,
                      ranks_descending, unit_rows)


def tome_merge(x: torch.Tensor, valid: torch.Tensor, r: torch.Tensor, *, metric: torch.Tensor | None = None,
               sizes: torch.Tensor | None = None) -> Merge:
    """Merge ``r[b]`` tokens of sample ``b`` away by bipartite soft matching; ``N_b - r[b]`` remain.

    ``x`` (B, N, D): features averaged; ``metric`` (B, N, Dm): features compared (ToMe uses the attention keys;
    ``x`` when omitted); ``sizes`` (B, N): tokens each slot already stands for (1 when omitted).
    """
    where = "tome_merge"
    check_valid(where, valid)
    batch, slots = valid.shape
    check_shape(where, "x", x, (batch, slots), 3, floating=True)
    metric = x if metric is None else metric
    check_shape(where, "metric", metric, (batch, slots), 3, floating=True)
    check_shape(where, "r", r, (batch,), 1)
    position = valid.long().cumsum(dim=1) - 1                              # (B, N) order among valid slots
    side_a = valid & (position % 2 == 0)                                   # (B, N)
    side_b = valid & (position % 2 == 1)
    room = side_a.sum(dim=1) * (side_b.sum(dim=1) > 0)                     # (B,) at most |A| merges, none without B
    if r.dtype != torch.long or bool(((r < 0) | (r > room)).any()):
        raise SelectorInputError(describe(
            f"merge counts {r.tolist()} for {valid.sum(dim=1).tolist()} tokens", where,
            "a long tensor with 0 <= r[b] <= ceil(N_b / 2) (0 when N_b < 2): one round merges at most set A",
            "merge in several rounds, or drop tokens with a selector"))
    unit = unit_rows(metric)                                               # (B, N, Dm)
    similarity = torch.bmm(unit, unit.transpose(1, 2))                     # (B, N, N) rows: A, columns: B
    similarity = similarity.masked_fill(~side_b[:, None, :], -float("inf"))
    best = similarity.amax(dim=2)                                          # (B, N) best match quality per row
    match = similarity.argmax(dim=2)                                       # (B, N) its B slot (first maximum)
    rank = ranks_descending(best.masked_fill(~side_a, -float("inf")))      # (B, N) A tokens by match quality
    merged = side_a & (rank < r[:, None])
    slot_ids = torch.arange(slots, device=x.device).expand(batch, slots)
    owner = torch.where(merged, match, torch.where(valid, slot_ids, -1))   # (B, N)
    return merge_into(x, owner, sizes)


def tome_merge_to(metric: torch.Tensor, valid: torch.Tensor, k: torch.Tensor,
                  sizes: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) long owners: merge sample ``b``'s tokens down to ``k[b]`` by bipartite soft matching, in as many
    rounds as it takes (one round merges at most half of them; each asks for what is left to merge, capped
    by that half). Between rounds the merged tokens' ``metric`` rows are their size-weighted means, as their
    features would be. ``owner[b, i]`` is the surviving slot token ``i`` ended in (itself for a survivor), -1 at
    padding and for every token of a sample with ``k[b] == 0`` (nothing to merge into: all dropped)."""
    check_selector_inputs("tome_merge_to", valid, k, metric)
    batch, slots = valid.shape
    slot_ids = torch.arange(slots, device=valid.device).expand(batch, slots)
    column = torch.where(valid & (k[:, None] > 0), slot_ids, -1)           # (B, N) current column of each token
    slot_of_column = slot_ids                                              # (B, N_cur) its original slot
    current, alive, weight = metric, valid, sizes
    while True:
        tokens = alive.sum(dim=1)                                          # (B,)
        left = torch.where(k > 0, tokens - k, 0).clamp_min(0)              # (B,) merges still to do
        if not bool((left > 0).any()):
            break
        room = torch.where(tokens > 1, (tokens + 1) // 2, 0)               # |A| of this round
        merge = tome_merge(current, alive, torch.minimum(left, room), sizes=weight)
        column = torch.where(column >= 0, merge.destination.gather(1, column.clamp_min(0)), -1)
        slot_of_column = slot_of_column.gather(1, merge.indices)          # (B, N_next)
        current, alive, weight = merge.features, merge.mask, merge.sizes
    return torch.where(column >= 0, slot_of_column.gather(1, column.clamp_min(0)), -1)
