"""CDPruner (Zhang et al., NeurIPS 2025, arXiv 2506.10967): maximise the instruction-conditioned diversity.

Relevance of vision token i to the instruction: the mean cosine similarity of ``x_i`` to the instruction's token
embeddings, min-max normalised over the sample's vision tokens to ``r_i`` in [0, 1]. The conditional DPP kernel
is ``L = diag(q) S diag(q)`` with ``S_ij = cos(x_i, x_j)`` and ``q_i = exp(alpha r_i)``, ``alpha = theta / (2 (1 -
theta))`` (``theta`` = 0.5 by default, trading relevance against diversity). The kept set is the DPP's greedy MAP
(Chen et al. 2018, fast greedy MAP inference): repeatedly add the token with the largest marginal gain ``d_i^2``
(the squared residual of its kernel row after projecting out the selected tokens), updating every ``d_i^2``
with one Cholesky row per step.

When the kernel's rank is exhausted (every remaining gain <= ``1e-6`` of the largest diagonal in float64,
``1e-4`` in float32, e.g. exact duplicates or fewer feature dimensions than kept tokens), the remaining slots go
to the most relevant remaining tokens. Ties go to the lower index. A float32 gain is the diagonal minus a sum of
up to K squares, so it carries rounding of about K 2^-24 of the diagonal: below ``1e-4`` it is noise, and a
threshold inside the noise would let the picks of a sample depend on the batch around it.

Cost: one kernel row per step, O(N D) (a pass over the features, cheaper than the whole (N, N) kernel while
K < N), and O(K N) for the Cholesky update: O(K N D + K^2 N) in all, in float32 (float64 inputs stay
float64), with no host synchronisation inside the loop.
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import Selection, SelectorInputError, check_selector_inputs, check_shape, selection_from_keep, unit_rows

DEFAULT_THETA = 0.5
RANK_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}  # of the largest diagonal, by compute dtype


def instruction_relevance(x: torch.Tensor, valid: torch.Tensor, text: torch.Tensor,
                          text_valid: torch.Tensor) -> torch.Tensor:
    """(B, N) relevance in [0, 1]: mean cosine similarity to the valid text tokens, min-max normalised over the
    valid vision tokens (0 at padding)."""
    unit, text_unit = unit_rows(x), unit_rows(text)
    text_unit = text_unit.to(unit.dtype)
    cosine = torch.bmm(unit, text_unit.transpose(1, 2))                   # (B, N, T)
    weights = text_valid.to(unit.dtype)                                    # (B, T)
    mean = (cosine * weights[:, None, :]).sum(dim=2) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)   # (B, N)
    low = mean.masked_fill(~valid, float("inf")).min(dim=1, keepdim=True).values
    high = mean.masked_fill(~valid, -float("inf")).max(dim=1, keepdim=True).values
    relevance = (mean - low) / (high - low + 1e-6)
    return torch.where(valid, relevance, torch.zeros_like(relevance))


def cdpruner(x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, text: torch.Tensor,
             text_valid: torch.Tensor | None = None, *, theta: float = DEFAULT_THETA) -> Selection:
    """Keep ``k[b]`` tokens of sample ``b`` by greedy MAP of the instruction-conditioned DPP.

    ``x`` (B, N, D): vision token features; ``text`` (B, T, D): the instruction's token embeddings in the same
    space, ``text_valid`` (B, T) marks the real ones (all when omitted).
    """
    where = "cdpruner"
    check_selector_inputs(where, valid, k, x)
    batch, slots, dim = x.shape
    check_shape(where, "text", text, (batch,), 3, floating=True)
    if text.shape[2] != dim:
        raise SelectorInputError(describe(f"text features have {text.shape[2]} dimensions, vision {dim}", where,
                                          "the same embedding space", "project the instruction's tokens first"))
    text_valid = torch.ones(text.shape[:2], dtype=torch.bool, device=x.device) if text_valid is None else text_valid
    check_shape(where, "text_valid", text_valid, tuple(text.shape[:2]), 2)
    if not 0.0 <= theta < 1.0:
        raise SelectorInputError(describe(f"theta={theta}", where, "0 <= theta < 1 (0: diversity only)",
                                          "use the paper's default 0.5"))
    alpha = theta / (2.0 * (1.0 - theta))
    quality = torch.exp(alpha * instruction_relevance(x, valid, text, text_valid.bool()))   # (B, N) q_i
    unit = unit_rows(x)                                                    # (B, N, D)
    weighted = unit * quality[:, :, None]                                  # (B, N, D) q_i x_i / |x_i|: L = W W^T
    # Greedy MAP state, one (B, 2, N) tensor so that a pick closes both rows at once: row 0 holds gain[i] = d_i^2
    # and row 1 the quality for the rank-exhausted fallback, both -inf once chosen and at padding.
    state = torch.stack([quality.square() * (unit.abs().amax(dim=2) > 0), quality], dim=1)   # (B, 2, N)
    state.masked_fill_(~valid[:, None, :], -float("inf"))
    gain, open_quality = state[:, 0], state[:, 1]                          # (B, N) views
    tolerance = RANK_TOLERANCE[gain.dtype] * gain.amax(dim=1).clamp_min(0.0)   # (B,)
    steps = int(k.max()) if batch else 0
    factors = torch.zeros(batch, slots, steps, dtype=unit.dtype, device=x.device)   # (B, N, K): e_s in column s
    picks = []                                                             # the greedy order, (B,) each
    rows = torch.arange(batch, device=x.device)
    for step in range(steps):
        best = gain.amax(dim=1)                                            # (B,) = d_pick^2 unless exhausted
        # Gains only shrink and the candidates only leave, so once exhausted a sample stays exhausted.
        exhausted = best <= tolerance                                      # (B,)
        pick = torch.where(exhausted[:, None], open_quality, gain).argmax(dim=1)   # (B,)
        picks.append(pick)
        # Only the columns written so far: the sum's length (and its rounding) does not depend on the batch's k.
        done = factors[:, :, :step]                                        # (B, N, step)
        projected = (done * done[rows, pick][:, None, :]).sum(dim=2)     # (B, N) <e_.., e_pick>
        # 1 / d_pick, or 0 once exhausted: then no token gains anything more (and a gain <= 0 is never divided by).
        scale = torch.where(exhausted, 0.0, best.rsqrt())                 # (B,)
        # One kernel row per step, O(N D): cheaper than the whole (N, N) kernel while K < N.
        kernel_row = torch.bmm(weighted, weighted[rows, pick][:, :, None]).squeeze(2)   # (B, N) L[pick]
        row = (kernel_row - projected) * scale[:, None]                    # (B, N) e_step
        factors[:, :, step] = row
        gain.sub_(row.square())
        state[rows, :, pick] = -float("inf")
    # Sample b keeps its first k[b] picks (later steps only served samples that keep more).
    first = torch.arange(steps, device=x.device)[None, :] < k[:, None]    # (B, K)
    chosen = torch.zeros(batch, slots + 1, dtype=torch.bool, device=x.device)
    order = torch.stack(picks, dim=1) if picks else torch.zeros(batch, 0, dtype=torch.long, device=x.device)
    chosen.scatter_(1, torch.where(first, order, slots), True)
    return selection_from_keep(chosen[:, :slots])
