"""DART (Wen et al. 2025, arXiv 2502.11494, "Stop Looking for Important Tokens ...: Duplication Matters More").

At a cut inside the language model, a few *pivot* tokens are chosen (the paper's default: the tokens whose key
states have the largest norm; its implementation uses the L1 norm over all key heads, 4 vision and 4 text
pivots), and every pivot in turn keeps the not-yet-kept vision tokens least similar to it (cosine similarity of
the hidden states): tokens duplicated by a pivot are dropped. The vision pivots are kept too; text pivots only
steer the choice. This function takes the pivot ranking as scores (``pivot_scores``: the key norms, or any
other rule the paper ablates); :mod:`tokenprune.scoring.drop_selectors` passes the scoring layer's key norms.

Budget rule here (the paper leaves rounding open): sample ``b`` keeps exactly ``k[b]`` tokens: its
``min(num_pivots, k[b])`` vision pivots, then ``k[b] - pivots`` tokens shared out over all its pivots in order
(vision pivots by decreasing key norm, then text pivots likewise), the first ``remainder`` pivots taking one
more. Ties (norms, similarities) go to the lower index.

Cost: one (N, D) x (D, P) product for the similarities to every pivot, then O(N log N) per pivot: O(P N (D +
log N)) in all; no (N, N) matrix.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Selection, SelectorInputError, check_selector_inputs, check_shape, compute_dtype,
                      ranks_descending, selection_from_keep, unit_rows)

DEFAULT_VISION_PIVOTS = 4
DEFAULT_TEXT_PIVOTS = 4


def dart(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, *, pivot_scores: torch.Tensor | None = None,
         num_pivots: int = DEFAULT_VISION_PIVOTS, text: torch.Tensor | None = None,
         text_pivot_scores: torch.Tensor | None = None, text_valid: torch.Tensor | None = None,
         num_text_pivots: int = DEFAULT_TEXT_PIVOTS) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b``: pivots plus the tokens least duplicated by them.

    ``x`` (B, N, D): hidden states at the cut; ``pivot_scores`` (B, N): the pivot ranking, largest first (the
    paper: the L1 norm of each token's key states over all heads, see :func:`key_norms`; the L1 norm of ``x``
    when omitted). ``text`` (B, T, D) / ``text_pivot_scores`` (B, T) / ``text_valid`` (B, T): the instruction's
    tokens, optional source of ``num_text_pivots`` extra pivots.
    """
    where = "dart"
    check_selector_inputs(where, valid, k, x)
    batch, slots, _ = x.shape
    if num_pivots < 1 or num_text_pivots < 0:
        raise SelectorInputError(describe(
            f"num_pivots={num_pivots}, num_text_pivots={num_text_pivots}", where,
            "at least one vision pivot and no negative count", "keep the paper's defaults (4 and 4)"))
    pivot_scores = key_norms(x) if pivot_scores is None else pivot_scores
    check_shape(where, "pivot_scores", pivot_scores, (batch, slots), 2, floating=True)
    unit = unit_rows(x)                                                     # (B, N, D)

    vision_pivots = torch.minimum(k, torch.full_like(k, num_pivots))       # (B,)
    norm_rank = ranks_descending(pivot_scores.masked_fill(~valid, -float("inf")))   # (B, N)
    kept = valid & (norm_rank < vision_pivots[:, None])                    # (B, N) the vision pivots
    pivot_slots = torch.sort(norm_rank, dim=1).indices[:, :num_pivots]     # (B, P_v) slots by decreasing score
    pivot_rows = [unit.gather(1, pivot_slots[:, :, None].expand(-1, -1, unit.shape[2]))]   # (B, P_v, D)
    present = [torch.arange(pivot_slots.shape[1], device=x.device)[None, :] < vision_pivots[:, None]]  # (B, P_v)
    text_pivots = torch.zeros_like(k)
    if text is not None:
        text_valid = _check_text(where, text, text_pivot_scores, text_valid, batch)
        text_pivot_scores = key_norms(text) if text_pivot_scores is None else text_pivot_scores
        text_unit = unit_rows(text).to(unit.dtype)                         # (B, T, D)
        text_pivots = torch.minimum(text_valid.sum(dim=1), torch.full_like(k, num_text_pivots))
        text_rank = ranks_descending(text_pivot_scores.masked_fill(~text_valid, -float("inf")))
        text_slots = torch.sort(text_rank, dim=1).indices[:, :num_text_pivots]             # (B, P_t)
        pivot_rows.append(text_unit.gather(1, text_slots[:, :, None].expand(-1, -1, unit.shape[2])))
        order = torch.arange(text_slots.shape[1], device=x.device)[None, :]
        present.append((order < text_pivots[:, None]) & (k > 0)[:, None])

    # Cosine similarity of every token to every pivot in one product; the loop below is (B, N) work only.
    similarity = torch.bmm(unit, torch.cat(pivot_rows, dim=1).transpose(1, 2))   # (B, N, P)
    present = torch.cat(present, dim=1)                                    # (B, P)
    count = vision_pivots + torch.where(k > 0, text_pivots, 0)             # (B,) pivots per sample
    rest = k - vision_pivots                                               # (B,) tokens the pivots share
    share, remainder = rest // count.clamp_min(1), rest % count.clamp_min(1)
    used = torch.zeros_like(k)                                             # (B,) pivots handled so far
    for p in range(similarity.shape[2]):
        quota = torch.where(present[:, p], share + (used < remainder).long(), 0)   # (B,)
        candidate = valid & ~kept
        rank = ranks_descending((-similarity[:, :, p]).masked_fill(~candidate, -float("inf")))
        kept |= candidate & (rank < quota[:, None])
        used = used + present[:, p].long()
    return selection_from_keep(kept)


def key_norms(keys: torch.Tensor) -> torch.Tensor:
    """(B, N) the L1 norm of each token's (B, N, Dk) key states (DART's pivot rule), in float32 (float64 kept)."""
    return keys.to(compute_dtype(keys)).abs().sum(dim=-1)


def _check_text(where: str, text, text_pivot_scores, text_valid, batch: int) -> torch.Tensor:
    check_shape(where, "text", text, (batch,), 3, floating=True)
    if text_pivot_scores is not None:
        check_shape(where, "text_pivot_scores", text_pivot_scores, tuple(text.shape[:2]), 2, floating=True)
    if text_valid is None:
        return torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    check_shape(where, "text_valid", text_valid, tuple(text.shape[:2]), 2)
    return text_valid.bool()
