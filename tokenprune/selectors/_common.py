"""The input checks and the output layout shared by every selector.

Every selector works on a padded batch: ``x`` (B, N, D) holds sample ``b``'s vision tokens in the slots where
``valid[b]`` is true (N_b of them, in index order), and ``k[b]`` says how many it keeps. A pure selector returns a
:class:`Selection`; a selector that also merges returns a :class:`Merge`.

Padding rule of both: a sample that keeps fewer than ``K_max = max_b(kept_b)`` tokens fills its row with its own
largest kept index (0 when it keeps nothing), so a gather with the padded indices never leaves the N slots and
the rows stay sorted ascending; ``mask`` tells real entries from the filler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TokenPruneError, describe
from ..schedule import keep_count


class SelectorInputError(TokenPruneError, ValueError):
    """A selector was given tensors of the wrong shape, dtype or range."""


@dataclass(frozen=True)
class Selection:
    """Kept token slots per sample."""

    indices: torch.Tensor  # (B, K_max) long, ascending per row; filler repeats the row's largest kept index
    mask: torch.Tensor     # (B, K_max) bool, True for a real kept slot

    def keep_mask(self, num_slots: int) -> torch.Tensor:
        """(B, N) bool: True at every kept slot."""
        return keep_mask_of(self.indices, self.mask, num_slots)


@dataclass(frozen=True)
class Merge:
    """Output tokens that each stand for a group of input tokens.

    Output token ``j`` of sample ``b`` sits at slot ``indices[b, j]`` (its position in the sequence: the slot
    of one of the tokens it absorbed) and equals ``weights[b, j] @ x[b]``.
    """

    indices: torch.Tensor      # (B, K_max) long, ascending; filler as in Selection
    mask: torch.Tensor         # (B, K_max) bool
    features: torch.Tensor     # (B, K_max, D) merged features (zeros in filler rows)
    weights: torch.Tensor      # (B, K_max, N) rows sum to 1 over the absorbed slots (all zero in filler rows)
    sizes: torch.Tensor        # (B, K_max) how many original tokens each output token stands for
    destination: torch.Tensor  # (B, N) long: output column each input slot went into, -1 if dropped/padding

    def selection(self) -> Selection:
        return Selection(self.indices, self.mask)


def keep_mask_of(indices: torch.Tensor, mask: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(B, N) bool, True at ``indices[mask]``; filler entries (which repeat a slot) write nowhere."""
    keep = torch.zeros(indices.shape[0], num_slots + 1, dtype=torch.bool, device=indices.device)
    return keep.scatter_(1, torch.where(mask, indices, num_slots), True)[:, :num_slots]


def keep_counts(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B,) long: ``ceil(ratio * N_b)`` per sample, the project's keep-count rule."""
    counts = valid.sum(dim=1).tolist()
    return torch.tensor([keep_count(ratio, n) for n in counts], dtype=torch.long, device=valid.device)


def check_valid(where: str, valid) -> None:
    """Raise :class:`SelectorInputError` unless ``valid`` is a (B, N) bool tensor."""
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.dim() != 2:
        raise SelectorInputError(describe(
            f"valid must be a (B, N) bool tensor, got {_shape_of(valid)}", where,
            "True at the slots that hold a vision token, False at padding", "pass e.g. `x_mask.bool()`"))


def check_selector_inputs(where: str, valid: torch.Tensor, k: torch.Tensor, x: torch.Tensor | None = None) -> None:
    """Raise :class:`SelectorInputError` unless ``valid`` (B, N) bool, ``k`` (B,) long in [0, N_b] and
    ``x`` (B, N, D) floating agree."""
    check_valid(where, valid)
    batch, slots = valid.shape
    if x is not None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[:2]) != (batch, slots):
            raise SelectorInputError(describe(
                f"features must be (B, N, D) = ({batch}, {slots}, D), got {_shape_of(x)}", where,
                "one feature row per slot of `valid`", "pass the vision tokens' features padded like `valid`"))
        if not x.is_floating_point():
            raise SelectorInputError(describe(f"features must be floating point, got {x.dtype}", where,
                                              "a float tensor", "cast with `.float()`"))
    if not isinstance(k, torch.Tensor) or k.dim() != 1 or k.shape[0] != batch or k.dtype != torch.long:
        raise SelectorInputError(describe(
            f"keep counts must be a ({batch},) long tensor, got {_shape_of(k)}", where,
            "one count per sample", "use `tokenprune.selectors.keep_counts(valid, ratio)`"))
    tokens = valid.sum(dim=1)
    bad = (k < 0) | (k > tokens)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise SelectorInputError(describe(
            f"sample {b} is asked to keep {int(k[b])} of its {int(tokens[b])} vision tokens", where,
            "0 <= k[b] <= N_b (the number of True entries of valid[b])", "clamp k to the sample's token count"))


def check_shape(where: str, name: str, tensor, leading: tuple[int, ...], dims: int, floating: bool = False) -> None:
    """Raise unless ``tensor`` has ``dims`` dimensions whose first ones are ``leading``."""
    ok = (isinstance(tensor, torch.Tensor) and tensor.dim() == dims and tuple(tensor.shape[:len(leading)]) == leading
          and (not floating or tensor.is_floating_point()))
    if not ok:
        kind = "a floating-point tensor" if floating else "a tensor"
        raise SelectorInputError(describe(
            f"{name} is {_shape_of(tensor)}", where, f"{kind} of {dims} dimensions starting with {leading}",
            f"pass {name} for the same batch, padded like `valid`"))


def _shape_of(value) -> str:
    return f"shape {tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; anything narrower is computed in float32 (similarities in half precision tie)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., D) rows scaled to unit L2 norm in the compute dtype; an all-zero row stays zero."""
    x = x.to(compute_dtype(x))
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def valid_order(valid: torch.Tensor) -> torch.Tensor:
    """(B, N) long: the valid slots of each row first, in index order, then the padding slots."""
    return torch.argsort((~valid).to(torch.int8), dim=1, stable=True)


def ranks_descending(scores: torch.Tensor) -> torch.Tensor:
    """(B, N) long rank of each entry when sorted by score, largest first, ties by lower index first."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    return ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))


def selection_from_keep(keep: torch.Tensor) -> Selection:
    """Turn a (B, N) bool keep mask into sorted, padded indices."""
    counts = keep.sum(dim=1)                                               # (B,)
    width = int(counts.max()) if keep.shape[0] else 0
    indices = valid_order(keep)[:, :width]                                 # (B, K_max) kept slots first, ascending
    mask = torch.arange(width, device=keep.device) < counts[:, None]       # (B, K_max)
    last = indices.gather(1, (counts - 1).clamp_min(0)[:, None]) if width else indices
    last = torch.where(counts[:, None] > 0, last, torch.zeros_like(last))  # (B, 1)
    return Selection(torch.where(mask, indices, last), mask)


def merge_into(x: torch.Tensor, owner: torch.Tensor, sizes: torch.Tensor | None = None) -> Merge:
    """Merge every slot into the slot ``owner`` names (itself to survive alone, -1 to drop it).

    A slot survives iff it owns itself; its output token is the size-weighted average of the slots it owns.
    ``sizes`` (B, N) counts the original tokens each input slot already stands for (1 if omitted).
    """
    batch, slots, _ = x.shape
    dtype = compute_dtype(x)
    sizes = torch.ones(batch, slots, dtype=dtype, device=x.device) if sizes is None else sizes.to(dtype)
    survives = owner == torch.arange(slots, device=x.device)                 # (B, N)
    selection = selection_from_keep(survives)
    # Columns are ascending slots, so a survivor's column is the number of survivors before it.
    column_of_slot = torch.where(survives, survives.cumsum(dim=1) - 1, -1)  # (B, N)
    destination = torch.where(owner >= 0, column_of_slot.gather(1, owner.clamp_min(0)), -1)   # (B, N)
    width = selection.indices.shape[1]
    absorbed = torch.zeros(batch, width + 1, slots, dtype=dtype, device=x.device)   # extra row collects drops
    absorbed.scatter_(1, torch.where(destination >= 0, destination, width)[:, None, :], sizes[:, None, :])
    absorbed = absorbed[:, :width]                                          # (B, K_max, N) absorbed sizes
    total = absorbed.sum(dim=2)                                             # (B, K_max)
    weights = absorbed / total.clamp_min(torch.finfo(dtype).tiny)[:, :, None]
    features = torch.bmm(weights, x.to(dtype))                              # (B, K_max, D)
    return Merge(selection.indices, selection.mask, features, weights, total, destination)
