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

Cost: per step one kernel row minus its projection onto the earlier Cholesky rows, computed as a single
matrix-vector product: the features and the Cholesky rows sit side by side in one (N, D + K) matrix ``Z = [W | E]``
(``W`` the quality-weighted unit features, column ``D + s`` of ``E`` written at step ``s``, zero before), so
``L[p] - sum_s e_s[p] e_s = [w_p, -e_.[p]] Z^T`` reads ``Z`` once. O(K N (D + K)) in all, in float32 (float64
inputs stay float64), with no host synchronisation inside the loop; a step is about ten tensor operations (in
inference mode, without autograd's bookkeeping): on a CPU the per-operation overhead is as large as the product.
The rank-exhausted fallback is applied once after the loop. Multiplying out the whole (N, N) kernel first would do N / K times
the arithmetic at a higher rate; on a CPU (AMD EPYC, MKL, one thread, N = 576, D = 1024, K = 144) that variant
took 1.5 times as long as this one, and choosing per call would make a sample's rounding depend on
the batch's largest k and padding, so every call computes rows (``python -m tokenprune.selectors.benchmark``).
"""

from __future__ import annotations

import torch

from ..errors import describe
from ._common import (Selection, SelectorInputError, check_selector_inputs, check_shape, keep_mask_of,
                      ranks_descending, selection_from_keep, unit_rows)

DEFAULT_THETA = 0.5
RANK_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}  # of the largest diagonal, by compute dtype


def instruction_relevance(x: torch.Tensor, valid: torch.Tensor, text: torch.Tensor,
                          text_valid: torch.Tensor) -> torch.Tensor:
    """(B, N) relevance in [0, 1]: mean cosine similarity to the valid text tokens, min-max normalised over the
    valid vision tokens (0 at padding)."""
    return _relevance(unit_rows(x), valid, text, text_valid)


def _relevance(unit: torch.Tensor, valid: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
    """:func:`instruction_relevance` of the (B, N, D) unit-norm vision features ``unit``."""
    text_unit = unit_rows(text).to(unit.dtype)                             # (B, T, D)
    weights = text_valid.to(unit.dtype)                                    # (B, T)
    # mean_t cos(x_i, y_t) = <u_i, mean_t y_t / |y_t|>: one (N, D) x (D,) product instead of (N, D) x (D, T).
    count = weights.sum(dim=1)[:, None, None].clamp_min(1.0)              # (B, 1, 1)
    direction = torch.bmm(weights[:, None, :], text_unit) / count         # (B, 1, D)
    mean = torch.bmm(unit, direction.transpose(1, 2)).squeeze(2)          # (B, N)
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
    unit = unit_rows(x)                                                    # (B, N, D)
    quality = torch.exp(alpha * _relevance(unit, valid, text, text_valid.bool()))   # (B, N) q_i
    nonzero = torch.linalg.vector_norm(unit, dim=2) > 0                   # (B, N) without an (N, D) temporary
    gain = (quality.square() * nonzero).masked_fill(~valid, -float("inf"))   # (B, N) d_i^2, -inf at padding
    tolerance = RANK_TOLERANCE[gain.dtype] * gain.amax(dim=1, keepdim=True).clamp_min(0.0)   # (B, 1)
    steps = int(k.max()) if batch else 0
    with torch.inference_mode():   # no pick has a gradient: the loop's small operations skip autograd's bookkeeping
        order, picked_gain = _greedy_map(unit, quality, gain, tolerance, steps)   # (B, K) each
    # The largest gain only shrinks (gains shrink, candidates leave), so the steps before the first exhausted one
    # are the greedy picks; sample b keeps those among its first k[b] steps (later steps served larger k).
    greedy = (picked_gain > tolerance) & (torch.arange(steps, device=x.device)[None, :] < k[:, None])   # (B, K)
    chosen = keep_mask_of(order, greedy, slots)                            # (B, N)
    # Rank exhausted: the rest of the budget goes to the most relevant open tokens (what picking the largest
    # quality step by step gives, ties to the lower index).
    open_tokens = valid & ~chosen                                          # (B, N)
    rank = ranks_descending(quality.masked_fill(~open_tokens, -float("inf")))   # (B, N)
    chosen |= open_tokens & (rank < (k - greedy.sum(dim=1))[:, None])
    return selection_from_keep(chosen)


def _greedy_map(unit: torch.Tensor, quality: torch.Tensor, gain: torch.Tensor, tolerance: torch.Tensor,
                steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` greedy MAP steps on ``L = W W^T``, ``W = diag(quality) unit`` (B, N, D), updating ``gain`` (B, N)
    in place.

    Returns the picks and the gain each was picked at, (B, K) each. Once a sample's largest gain is at most
    ``tolerance`` (B, 1) its kernel rank is exhausted: its later steps divide by the tolerance instead of a
    meaningless gain, its gains keep shrinking, and the caller ignores those picks."""
    batch, slots, dim = unit.shape
    # Z = [W | E] (B, N, D + K): row i holds w_i and, from step s on, e_s[i] in column D + s (zero before).
    z = unit.new_empty(batch, slots, dim + steps)
    torch.mul(unit, quality[:, :, None], out=z[:, :, :dim])
    z[:, :, dim:].zero_()
    columns = z.transpose(1, 2)                                            # (B, D + K, N)
    rows_of_e = z[:, :, dim:].transpose(1, 2).split(1, dim=1)              # K views (B, 1, N): e_s, written below
    sign = torch.ones(dim + steps, dtype=z.dtype, device=z.device)         # (D + K,) [w_p, -e_.[p]]
    sign[dim:] = -1.0
    gains = gain[:, None, :]                                               # (B, 1, N) view of gain
    floor = tolerance.clamp_min(torch.finfo(gain.dtype).tiny)[:, :, None]  # (B, 1, 1) > 0
    picks, bests = [], []
    for step in range(steps):
        best, pick = gains.max(dim=2, keepdim=True)                        # (B, 1, 1) each; ties: the lower index
        picks.append(pick)
        bests.append(best)
        # L[p] - sum_{s < step} e_s[p] e_s: one (D + K) x N product (columns >= step of E are still zero).
        row = torch.bmm(z.gather(1, pick.expand(-1, 1, dim + steps)).mul_(sign), columns)   # (B, 1, N)
        row.mul_(best.clamp_min(floor).rsqrt_())                           # e_step = row / d_p
        rows_of_e[step].copy_(row)
        gains.addcmul_(row, row, value=-1.0).scatter_(2, pick, -float("inf"))
    if not steps:
        return torch.zeros(batch, 0, dtype=torch.long, device=gain.device), gain[:, :0]
    return torch.cat(picks, dim=2)[:, 0], torch.cat(bests, dim=2)[:, 0]
