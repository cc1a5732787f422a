"""DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175): keep a maximally diverse subset.

Token pruning as a Max-Min Diversity Problem under the cosine distance ``d(i, j) = 1 - cos(x_i, x_j)``, solved
greedily: the first token is the one farthest from its nearest neighbour; every next one is the token whose
distance to the already selected set (its minimum distance to a selected token) is largest.

Cost: one (N, N) similarity per sample, O(N^2 D) (one matmul, float32 unless the input is float64), then O(N)
per greedy step (the running minimum distance is updated with the newly selected token's row, no host sync):
O(N^2 D + N K) in all. A step is four tensor operations (argmax, a row gather, a minimum, a scatter); the kept
mask is built once after the loop.
"""

from __future__ import annotations

import torch

from ._common import Selection, check_selector_inputs, keep_mask_of, selection_from_keep, unit_rows


def divprune(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b`` by greedy max-min cosine diversity of ``x`` (B, N, D).

    Ties go to the lower slot index.
    """
    check_selector_inputs("divprune", valid, k, x)
    batch, slots, _ = x.shape
    unit = unit_rows(x)                                                     # (B, N, D)
    distance = 1.0 - torch.bmm(unit, unit.transpose(1, 2))                  # (B, N, N)
    inf = float("inf")
    # Nearest *other* valid token of each token: padding columns and the diagonal do not count.
    to_others = distance.masked_fill(~valid[:, None, :], inf)
    to_others.diagonal(dim1=1, dim2=2).fill_(inf)
    # score: each open token's distance to the chosen set (before the first pick: to its nearest other token);
    # -inf once chosen and at padding.
    score = to_others.amin(dim=2).masked_fill(~valid, -inf)                # (B, N); inf for a lone token
    steps = int(k.max()) if batch else 0
    picks = []
    for step in range(steps):
        pick = score.argmax(dim=1, keepdim=True)                            # (B, 1) first maximum = lowest index
        picks.append(pick)
        to_pick = distance.gather(1, pick[:, :, None].expand(-1, 1, slots))[:, 0]   # (B, N) distance is symmetric
        score = to_pick.masked_fill(~valid, -inf) if step == 0 else torch.minimum(score, to_pick, out=score)
        score.scatter_(1, pick, -inf)
    # Sample b keeps its first k[b] picks (later steps only served samples that keep more).
    order = torch.cat(picks, dim=1) if picks else torch.zeros(batch, 0, dtype=torch.long, device=x.device)
    first = torch.arange(steps, device=x.device)[None, :] < k[:, None]     # (B, K)
    return selection_from_keep(keep_mask_of(order, first, slots))
