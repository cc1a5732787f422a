"""VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467): dominant tokens plus merged contextual tokens.

*Dominant* tokens are the ones receiving the most attention (from [CLS] in a late vision-encoder layer, or the
mean attention for towers without [CLS]; the caller passes that score). The rest are merged into a few
*contextual* tokens: targets are picked uniformly (every ``step``-th remaining token in index order, ``step =
max(1, R // C)`` for R remaining tokens and C contextual tokens), every other remaining token joins the target
whose key is most cosine-similar, and each group is averaged. The paper's budget for 64 tokens on LLaVA-1.5 is
54 dominant + 10 contextual; ``contextual`` defaults to ``round(10/64 * k)`` (10, 20, 30 for 64, 128, 192).

Output rule: a contextual token sits at its target's slot (a real token's position), so the kept slots are the
dominant slots plus the target slots, distinct and sorted; its feature is the plain mean of its group (the
reference implementation adds the target's feature to the mean of the others instead; we keep a true average
so merge weights sum to 1). ``destination`` maps every valid slot to the output token that absorbed it.

Cost: a sort for the dominant tokens, then O(N C Dk) for the assignment.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Merge, SelectorInputError, check_selector_inputs, check_shape, merge_into, ranks_descending,
                      unit_rows, valid_order)

CONTEXTUAL_SHARE = 10 / 64


def default_contextual(k: torch.Tensor) -> torch.Tensor:
    """(B,) long: ``round(10/64 * k)``, the paper's contextual share (half rounds up)."""
    return torch.floor(k.double() * CONTEXTUAL_SHARE + 0.5).long()


def visionzip(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, attention: torch.Tensor, *,
              keys: torch.Tensor | None = None, contextual: torch.Tensor | None = None) -> Merge:
    """Keep ``k[b] - contextual[b]`` dominant tokens and merge the rest into ``contextual[b]`` tokens.

    ``x`` (B, N, D): vision features; ``attention`` (B, N): attention each token receives; ``keys`` (B, N, Dk):
    the features compared when merging (``x`` when omitted).
    """
    where = "visionzip"
    check_selector_inputs(where, valid, k, x)
    batch, slots, _ = x.shape
    check_shape(where, "attention", attention, (batch, slots), 2, floating=True)
    keys = x if keys is None else keys
    check_shape(where, "keys", keys, (batch, slots), 3, floating=True)
    contextual = default_contextual(k) if contextual is None else contextual
    check_shape(where, "contextual", contextual, (batch,), 1)
    if bool(((contextual < 0) | (contextual > k)).any()):
        raise SelectorInputError(describe(f"contextual counts {contextual.tolist()} for keep counts {k.tolist()}",
                                          where, "0 <= contextual[b] <= k[b]", "leave `contextual` at its default"))
    dominant_count = k - contextual                                        # (B,)
    rank = ranks_descending(attention.masked_fill(~valid, -float("inf")))  # (B, N)
    dominant = valid & (rank < dominant_count[:, None])                   # (B, N)
    remaining = valid & ~dominant
    remaining_rank = remaining.long().cumsum(dim=1) - 1                    # (B, N) order among the remaining
    step = (remaining.sum(dim=1) // contextual.clamp_min(1)).clamp_min(1)  # (B,)
    target = remaining & (remaining_rank % step[:, None] == 0) & (remaining_rank // step[:, None] < contextual[:, None])
    owner = torch.where(dominant | target, torch.arange(slots, device=x.device), -1)   # (B, N)
    width = int(contextual.max()) if batch else 0
    if width:
        target_slots = valid_order(target)[:, :width]                      # (B, C_max) targets first, ascending
        target_real = torch.arange(width, device=x.device) < target.sum(dim=1, keepdim=True)   # (B, C_max)
        unit = unit_rows(keys)                                             # (B, N, Dk)
        target_keys = unit.gather(1, target_slots[:, :, None].expand(-1, -1, unit.shape[2]))  # (B, C_max, Dk)
        similarity = torch.bmm(unit, target_keys.transpose(1, 2))          # (B, N, C_max)
        best = similarity.masked_fill(~target_real[:, None, :], -float("inf")).argmax(dim=2)   # (B, N) first max
        joins = remaining & ~target & target_real.any(dim=1, keepdim=True)
        owner = torch.where(joins, target_slots.gather(1, best), owner)
    return merge_into(x, owner)
