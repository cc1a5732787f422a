"""Random padded batches and the properties every selector's output must have."""

from __future__ import annotations

import numpy as np
import torch

from tokenprune.selectors import Selection, keep_counts


def padded_batch(seed: int, sizes: list[int], dim: int = 24, scattered: bool = False,
                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B, N, D) and ``valid`` (B, N) for samples of ``sizes`` tokens; padding at the end, or (``scattered``)
    at random slots. Padding rows hold large junk so that a selector reading them shows."""
    generator = torch.Generator().manual_seed(seed)
    slots = max(sizes) + 2
    x = 50 * torch.randn(len(sizes), slots, dim, generator=generator, dtype=dtype)
    valid = torch.zeros(len(sizes), slots, dtype=torch.bool)
    for b, size in enumerate(sizes):
        where = torch.randperm(slots, generator=generator)[:size].sort().values if scattered else torch.arange(size)
        valid[b, where] = True
        x[b, where] = torch.randn(size, dim, generator=generator, dtype=dtype)
    return x, valid


def tokens_of(tensor: torch.Tensor, valid: torch.Tensor, b: int) -> np.ndarray:
    """Sample ``b``'s rows at its valid slots, in order, as a numpy array (what a per-sample reference sees)."""
    return tensor[b][valid[b]].numpy()


def kept_positions(selection: Selection, valid: torch.Tensor, b: int) -> list[int]:
    """Sample ``b``'s kept tokens as positions among its valid slots (0 .. N_b - 1)."""
    position_of_slot = valid[b].long().cumsum(0) - 1
    return sorted(position_of_slot[selection.indices[b][selection.mask[b]]].tolist())


def assert_valid_selection(selection: Selection, valid: torch.Tensor, k: torch.Tensor) -> None:
    """k respected per sample, indices valid, unique and ascending, filler repeats the last kept index."""
    indices, mask = selection.indices, selection.mask
    assert indices.dtype == torch.long and mask.dtype == torch.bool and indices.shape == mask.shape
    assert indices.shape[1] == int(k.max())
    for b in range(valid.shape[0]):
        real = indices[b][mask[b]].tolist()
        assert mask[b].tolist() == [True] * int(k[b]) + [False] * (indices.shape[1] - int(k[b])), b
        assert real == sorted(set(real)), f"sample {b}: not unique and ascending: {real}"
        assert all(valid[b, i] for i in real), f"sample {b}: a padding slot was kept: {real}"
        filler = real[-1] if real else 0
        assert indices[b][~mask[b]].tolist() == [filler] * (indices.shape[1] - len(real))


def assert_keep_all(select, x: torch.Tensor, valid: torch.Tensor) -> None:
    """Keeping every token returns every valid slot."""
    k = valid.sum(dim=1)
    selection = select(x, valid, k)
    assert_valid_selection(selection, valid, k)
    for b in range(valid.shape[0]):
        assert selection.indices[b][selection.mask[b]].tolist() == valid[b].nonzero().squeeze(1).tolist()


def assert_batch_invariant(select, x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor,
                           slotwise: tuple = (), samplewise: tuple = ()) -> None:
    """A sample's choice is the same alone (no padding) as inside the padded batch.

    ``select(x, valid, k, *slotwise, *samplewise)``; ``slotwise`` tensors are padded like ``valid`` (cut to the
    sample's valid slots when alone), ``samplewise`` ones have one row per sample.
    """
    together = select(x, valid, k, *slotwise, *samplewise)
    for b in range(valid.shape[0]):
        alone_valid = torch.ones(1, int(valid[b].sum()), dtype=torch.bool)
        alone = select(x[b][valid[b]][None], alone_valid, k[b:b + 1], *[t[b][valid[b]][None] for t in slotwise],
                       *[t[b:b + 1] for t in samplewise])
        assert kept_positions(alone, alone_valid, 0) == kept_positions(together, valid, b), b


RATIOS = (0.05, 0.3, 0.5, 0.77, 1.0)
SIZES = [[9, 14, 1, 11], [16, 5, 12], [7]]


def counts(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    return keep_counts(valid, ratio)


def split_shares(k: int, sizes: list[int]) -> list[int]:
    """Largest-remainder split of a sample's count k over its images of ``sizes`` tokens (ties: the earlier image),
    written out plainly."""
    total = sum(sizes)
    shares = [k * n // total for n in sizes]
    for i in sorted(range(len(sizes)), key=lambda i: (-(k * sizes[i] % total), i))[:k - sum(shares)]:
        shares[i] += 1
    return shares
