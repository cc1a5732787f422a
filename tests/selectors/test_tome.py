"""ToMe bipartite soft matching against a per-sample reference written from the paper."""

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, tome_merge

from .helpers import SIZES, assert_batch_invariant, assert_valid_selection, padded_batch, tokens_of


def reference_tome(tokens, metric, sizes, r) -> tuple[list[int], np.ndarray, list[float]]:
    """Alternate tokens into A (even) and B (odd); match each A token to its most similar B token; merge the r
    best-matched A tokens into their B token by size-weighted averaging. Returns the surviving positions, their
    features and sizes."""
    unit = metric / np.linalg.norm(metric, axis=1, keepdims=True)
    side_a, side_b = list(range(0, len(tokens), 2)), list(range(1, len(tokens), 2))
    match = {a: max(side_b, key=lambda b: (unit[a] @ unit[b], -b)) for a in side_a} if side_b else {}
    ranked = sorted(match, key=lambda a: (-(unit[a] @ unit[match[a]]), a))
    merged = set(ranked[:r])
    groups = {i: [i] for i in range(len(tokens)) if i not in merged}
    for a in merged:
        groups[match[a]].append(a)
    survivors = sorted(groups)
    weight = [np.array([sizes[m] for m in groups[s]]) for s in survivors]
    features = np.stack([(w[:, None] * tokens[groups[s]]).sum(0) / w.sum() for s, w in zip(survivors, weight)])
    return survivors, features, [float(w.sum()) for w in weight]


@pytest.mark.parametrize("scattered", [False, True])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("share", [0.0, 0.3, 0.6, 1.0])
def test_matches_reference(seed, share, scattered):
    x, valid = padded_batch(seed, SIZES[seed], scattered=scattered)
    generator = torch.Generator().manual_seed(seed)
    metric = torch.randn(*valid.shape, 6, generator=generator, dtype=torch.float64)
    sizes = torch.randint(1, 5, valid.shape, generator=generator).double()
    tokens = valid.sum(dim=1)
    room = torch.where(tokens > 1, (tokens + 1) // 2, 0)                   # |A|, or 0 without a B set
    r = (share * room).long()
    merge = tome_merge(x, valid, r, metric=metric, sizes=sizes)
    assert_valid_selection(merge.selection(), valid, tokens - r)
    for b in range(len(r)):
        survivors, features, total = reference_tome(tokens_of(x, valid, b), tokens_of(metric, valid, b),
                                                    tokens_of(sizes, valid, b), int(r[b]))
        slots = valid[b].nonzero().squeeze(1)
        assert merge.indices[b][merge.mask[b]].tolist() == slots[survivors].tolist()
        np.testing.assert_allclose(merge.features[b][merge.mask[b]].numpy(), features, rtol=1e-12, atol=1e-12)
        assert merge.sizes[b][merge.mask[b]].tolist() == total


def test_sizes_are_conserved_and_every_token_has_a_destination():
    x, valid = padded_batch(3, [13, 6], scattered=True)
    merge = tome_merge(x, valid, torch.tensor([5, 2]))
    assert merge.sizes.sum(dim=1).tolist() == valid.sum(dim=1).double().tolist()
    assert ((merge.destination >= 0) == valid).all()


def test_batch_invariance_and_limits():
    x, valid = padded_batch(4, [12, 5, 9], scattered=True)

    def select(x, valid, k):
        return tome_merge(x, valid, valid.sum(dim=1) - k).selection()

    assert_batch_invariant(select, x, valid, valid.sum(dim=1) - torch.tensor([6, 2, 3]))
    with pytest.raises(SelectorInputError, match="one round merges at most set A"):
        tome_merge(x, valid, torch.tensor([7, 0, 0]))
