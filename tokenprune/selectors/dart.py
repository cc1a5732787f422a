"""DART (Wen et al. 2025, arXiv 2502.11494, "Stop Looking for Important Tokens ...: Duplication Matters More").

At a cut inside the language model, a few *pivot* tokens are chosen (the paper's default: the tokens whose key
states have the largest norm; its implementation uses the L1 norm, 4 vision and 4 text pivots), and every
pivot in turn keeps the not-yet-kept vision tokens least similar to it (cosine similarity of the hidden states):
tokens duplicated by a pivot are dropped. The vision pivots are kept too; text pivots only steer the choice.

Budget rule here (the paper leaves rounding open): sample ``b`` keeps exactly ``k[b]`` tokens: its
``min(num_pivots, k[b])`` vision pivots, then ``k[b] - pivots`` tokens shared out over all its pivots in order
(vision pivots by decreasing key norm, then text pivots likewise), the first ``remainder`` pivots taking one
more. Ties (norms, similarities) go to the lower index.

Cost: O(N D) per pivot, O(P N (D + log N)) in all; no (N, N) matrix.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Selection, SelectorInputError, check_selector_inputs, check_shape, ranks_descending,
                      selection_from_keep, unit_rows)

DEFAULT_VISION_PIVOTS = 4
DEFAULT_TEXT_PIVOTS = 4


def dart(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, *, keys: torch.Tensor | None = None,
         num_pivots: int = DEFAULT_VISION_PIVOTS, text: torch.Tensor | None = None,
         text_keys: torch.Tensor | None = None, text_valid: torch.Tensor | None = None,
         num_text_pivots: int = DEFAULT_TEXT_PIVOTS) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b``: pivots plus the tokens least duplicated by them.

    ``x`` (B, N, D): hidden states at the cut; ``keys`` (B, N, Dk): the layer's key states (pivots are ranked by
    their L1 norm; ``x`` itself when omitted). ``text`` (B, T, D) / ``text_keys`` (B, T, Dk) / ``text_valid``
    (B, T): the instruction's tokens, optional source of ``num_text_pivots`` extra pivots.
    """
    where = "dart"
    check_selector_inputs(where, valid, k, x)
    batch, slots, _ = x.shape
    if num_pivots < 1 or num_text_pivots < 0:
        raise SelectorInputError(describe(
            f"num_pivots={num_pivots}, num_text_pivots={num_text_pivots}", where,
            "at least one vision pivot and no negative count", "keep the paper's defaults (4 and 4)"))
    keys = x if keys is None else keys
    check_shape(where, "keys", keys, (batch, slots), 3, floating=True)
    unit = unit_rows(x)                                                     # (B, N, D)
    device = x.device
    rows = torch.arange(batch, device=device)

    vision_pivots = torch.minimum(k, torch.full_like(k, num_pivots))       # (B,)
    norm_rank = ranks_descending(_key_norm(keys).masked_fill(~valid, -float("inf")))   # (B, N)
    kept = valid & (norm_rank < vision_pivots[:, None])                    # (B, N) the vision pivots
    pivot_slots = torch.sort(norm_rank, dim=1).indices[:, :num_pivots]     # (B, P_v) slots by decreasing norm
    pivots = [(unit[rows, pivot_slots[:, p]], p < vision_pivots) for p in range(pivot_slots.shape[1])]
    text_pivots = torch.zeros_like(k)
    if text is not None:
        text_valid = _check_text(where, text, text_keys, text_valid, batch)
        text_keys = text if text_keys is None else text_keys
        text_unit = unit_rows(text).to(unit.dtype)                         # (B, T, D)
        text_pivots = torch.minimum(text_valid.sum(dim=1), torch.full_like(k, num_text_pivots))
        text_rank = ranks_descending(_key_norm(text_keys).masked_fill(~text_valid, -float("inf")))
        text_slots = torch.sort(text_rank, dim=1).indices[:, :num_text_pivots]
        pivots += [(text_unit[rows, text_slots[:, p]], (p < text_pivots) & (k > 0))
                   for p in range(text_slots.shape[1])]

    count = vision_pivots + torch.where(k > 0, text_pivots, 0)             # (B,) pivots per sample
    rest = k - vision_pivots                                               # (B,) tokens the pivots share
    share, remainder = rest // count.clamp_min(1), rest % count.clamp_min(1)
    used = torch.zeros_like(k)                                             # (B,) pivots handled so far
    for pivot, present in pivots:                                          # pivot (B, D), present (B,)
        quota = torch.where(present, share + (used < remainder).long(), 0)  # (B,)
        similarity = torch.bmm(unit, pivot[:, :, None]).squeeze(2)          # (B, N) cosine to this pivot
        candidate = valid & ~kept
        rank = ranks_descending((-similarity).masked_fill(~candidate, -float("inf")))
        kept |= candidate & (rank < quota[:, None])
        used = used + present.long()
    return selection_from_keep(kept)


def _key_norm(keys: torch.Tensor) -> torch.Tensor:
    return keys.to(torch.float64 if keys.dtype == torch.float64 else torch.float32).abs().sum(dim=-1)


def _check_text(where: str, text, text_keys, text_valid, batch: int) -> torch.Tensor:
    check_shape(where, "text", text, (batch,), 3, floating=True)
    if text_keys is not None:
        check_shape(where, "text_keys", text_keys, tuple(text.shape[:2]), 3, floating=True)
    if text_valid is None:
        return torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    check_shape(where, "text_valid", text_valid, tuple(text.shape[:2]), 2)
    return text_valid.bool()
