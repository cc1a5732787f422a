"""Random selection: the same draw as a per-sample reference, uniform inclusion, batch invariance."""

import torch

from tokenprune.selectors import random_keep

from .helpers import RATIOS, assert_batch_invariant, assert_keep_all, assert_valid_selection, counts, kept_positions
from .helpers import padded_batch


def reference_random(n: int, k: int, seed: int) -> list[int]:
    """The k tokens with the smallest of n uniform draws from a generator seeded with ``seed``."""
    draws = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    return sorted(sorted(range(n), key=lambda i: (draws[i], i))[:k])


def test_matches_reference():
    _, valid = padded_batch(0, [9, 14, 1, 11], scattered=True)
    seeds = torch.tensor([3, 1, 4, 1])
    for ratio in RATIOS:
        k = counts(valid, ratio)
        selection = random_keep(valid, k, seeds)
        assert_valid_selection(selection, valid, k)
        for b in range(4):
            assert kept_positions(selection, valid, b) == reference_random(int(valid[b].sum()), int(k[b]),
                                                                          int(seeds[b]))


def test_every_token_is_equally_likely():
    valid = torch.ones(2000, 10, dtype=torch.bool)
    selection = random_keep(valid, torch.full((2000,), 3), torch.arange(2000))
    hits = selection.keep_mask(10).sum(dim=0).double()
    # 600 expected per token; 5 standard deviations (sqrt(2000 * 0.3 * 0.7) ~ 20.5) either way.
    assert (hits - 600).abs().max() < 103, hits


def test_keep_all_and_batch_invariance():
    x, valid = padded_batch(1, [7, 12, 3], scattered=True)
    assert_keep_all(lambda x, v, k: random_keep(v, k, 5), x, valid)
    assert_batch_invariant(lambda x, v, k, s: random_keep(v, k, s), x, valid, counts(valid, 0.5),
                           samplewise=(torch.tensor([2, 8, 9]),))
