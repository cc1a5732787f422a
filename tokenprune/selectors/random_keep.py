"""Random selection, the baseline every selector has to beat (several published methods do not).

Sample ``b`` draws one uniform number per valid token, in index order, from a generator seeded with
``seeds[b]`` and keeps the ``k[b]`` tokens with the smallest draws. The draws depend only on the sample's own
seed and token count, so a sample's choice does not change with the batch it is in.
"""

from __future__ import annotations

import torch

from ._common import Selection, check_selector_inputs, check_shape, selection_from_keep


def random_keep(valid: torch.Tensor, k: torch.Tensor, seeds: torch.Tensor | int = 0) -> Selection:
    """Keep ``k[b]`` uniformly random tokens of sample ``b``; ``seeds`` is one int for all samples or (B,) long."""
    where = "random_keep"
    check_selector_inputs(where, valid, k, None)
    batch, slots = valid.shape
    if isinstance(seeds, int):
        seeds = torch.full((batch,), seeds, dtype=torch.long)
    check_shape(where, "seeds", seeds, (batch,), 1)
    draws = torch.full((batch, slots), float("inf"), dtype=torch.float64)    # (B, N), padding never drawn
    for b, (seed, mask) in enumerate(zip(seeds.tolist(), valid.cpu())):
        generator = torch.Generator().manual_seed(int(seed))
        draws[b, mask] = torch.rand(int(mask.sum()), generator=generator, dtype=torch.float64)
    order = torch.sort(draws, dim=1, stable=True).indices                   # (B, N) smallest draw first
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(slots).expand(batch, slots))
    return selection_from_keep(valid & (rank.to(valid.device) < k[:, None]))
