"""The merge op beside the gather: a cut whose selector answered with a ``CutMerge`` folds the tokens it absorbs
into their survivors.

Only the hidden states are merged: at each survivor's slot the next layer receives the size-weighted mean of the
hidden states entering the cut at the slots it absorbed (itself included). Masks, rotary values and position ids
are gathered exactly as for a drop, so a merged token keeps its survivor's original position. The merge happens
on the prompt's prefill (and on no-cache re-runs of it); cached decode steps see the merged tokens through the
keys and values the layers after the cut stored at prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MergePlan:
    """How one cut merges, in the layouts before (``n`` slots) and after (``K`` slots) it."""

    weights: torch.Tensor  # (B, K, n) fp32: rows of merging survivors sum to 1, other rows are zero
    rows: torch.Tensor  # (B, K) bool: the new slot holds a survivor that absorbed another token
    source_positions: torch.Tensor  # (B, n) long: prompt position of each slot before the cut


def plan_merge(owner: torch.Tensor, weight_sizes: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
               source_positions: torch.Tensor) -> MergePlan | None:
    """The merge of a validated ``owner`` (B, n) (-1 outside the still-kept vision slots) onto a cut that keeps
    ``index`` (B, K) of the previous slots (``valid`` (B, K): not batch padding); None when no survivor absorbs
    another token (the cut then is an ordinary drop, bit for bit)."""
    bsz, n = owner.shape
    slots = torch.arange(n, device=owner.device)
    absorbed = (owner >= 0) & (owner != slots)  # (B, n) merged into another slot
    if not bool(absorbed.any()):
        return None
    new_slot = torch.full((bsz, n + 1), -1, dtype=torch.long, device=owner.device)  # column n collects padding
    new_slot.scatter_(1, torch.where(valid, index, n), torch.arange(index.shape[1], device=owner.device).expand_as(index))
    dest = torch.where(owner >= 0, new_slot.gather(1, owner.clamp_min(0)), -1)  # (B, n) new slot absorbing each
    width = index.shape[1]
    mass = torch.zeros(bsz, width + 1, n, dtype=torch.float32, device=owner.device)  # row K collects the rest
    mass.scatter_(1, torch.where(dest >= 0, dest, width)[:, None, :], weight_sizes.float()[:, None, :])
    mass = mass[:, :width]  # (B, K, n)
    rows = torch.zeros(bsz, width + 1, dtype=torch.bool, device=owner.device)
    rows.scatter_(1, torch.where(absorbed, dest, width), True)
    rows = rows[:, :width] & valid  # (B, K)
    weights = torch.where(rows[:, :, None], mass / mass.sum(dim=2, keepdim=True).clamp_min(1e-30), 0.0)
    return MergePlan(weights, rows, source_positions)


def carried_sizes(tracked: torch.Tensor | None, plan: MergePlan | None, index: torch.Tensor) -> torch.Tensor | None:
    """(B, K) original tokens each slot after the cut stands for, from ``tracked`` (B, n) before it (None: one
    each); None while no cut has merged (every slot stands for itself)."""
    if plan is None:
        return None if tracked is None else tracked.gather(1, index)
    before = torch.ones(plan.source_positions.shape, device=index.device) if tracked is None else tracked.float()
    kept = before.gather(1, index)  # (B, K)
    absorbed = torch.bmm((plan.weights > 0).float(), before[:, :, None])[:, :, 0]  # (B, K) sizes of the members
    return torch.where(plan.rows, absorbed, kept)


def merge_hidden(hidden: torch.Tensor, gathered: torch.Tensor, plan: MergePlan, token_axis: int = 1,
                 batch_axis: int = 0) -> torch.Tensor:
    """``gathered`` (the cut's gather of ``hidden``) with every merging survivor's row replaced by the weighted
    mean of ``hidden``'s rows it absorbs. Any layout: batch and token axes as the spec's hidden-state layout says.
    Rows past the prompt (a no-cache re-run's new tokens) pass through."""
    token_axis, batch_axis = token_axis % hidden.dim(), batch_axis % hidden.dim()
    src = hidden.movedim((batch_axis, token_axis), (0, 1))  # (B, n_call, ...)
    out = gathered.movedim((batch_axis, token_axis), (0, 1))  # (B, K_call, ...)
    extra = out.shape[1] - plan.rows.shape[1]  # trailing non-prompt tokens: never merged
    weights = F.pad(plan.weights.to(src.device), (0, extra, 0, extra))  # (B, K_call, n_call)
    rows = F.pad(plan.rows.to(src.device), (0, extra))  # (B, K_call)
    flat = src.reshape(*src.shape[:2], -1)  # (B, n_call, F)
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    merged = torch.bmm(weights.to(dtype), flat.to(dtype)).to(hidden.dtype).view(out.shape)  # (B, K_call, ...)
    view = rows.shape + (1,) * (out.dim() - 2)
    return torch.where(rows.view(view), merged, out).movedim((0, 1), (batch_axis, token_axis))


def merge_matrix(plan: MergePlan, positions_after: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """(B, P, P) fp32 over prompt positions: row ``p`` holds the weights of the merge at the survivor at ``p``
    over the positions whose hidden states it averages; rows of unmerged positions are zero."""
    bsz, width, n = plan.weights.shape
    cols = torch.zeros(bsz, width, prompt_length, device=plan.weights.device)
    cols.scatter_add_(2, plan.source_positions[:, None, :].expand(bsz, width, n), plan.weights)  # (B, K, P)
    out = torch.zeros(bsz, prompt_length + 1, prompt_length, device=plan.weights.device)
    target = torch.where(plan.rows, positions_after, prompt_length)  # (B, K): unmerged rows go to the spare row
    out.scatter_add_(1, target[:, :, None].expand(bsz, width, prompt_length), cols)
    return out[:, :prompt_length]
