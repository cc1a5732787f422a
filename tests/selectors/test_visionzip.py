"""VisionZip against a per-sample reference written from the paper: top-attention dominant tokens, the rest merged
into uniformly picked targets by key similarity."""

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, default_contextual, visionzip

from .helpers import RATIOS, SIZES, assert_batch_invariant, assert_valid_selection, counts, padded_batch, tokens_of


def reference_visionzip(tokens, attention, keys, k, contextual) -> dict[int, list[int]]:
    """{output position: the positions it averages}: dominant tokens stand alone, every contextual token is a
    target (every step-th remaining token) plus the remaining tokens whose key is most similar to its key."""
    order = sorted(range(len(tokens)), key=lambda i: (-attention[i], i))
    groups = {i: [i] for i in order[:k - contextual]}
    remaining = [i for i in range(len(tokens)) if i not in groups]
    if contextual == 0:
        return groups
    targets = remaining[::max(1, len(remaining) // contextual)][:contextual]
    unit = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    groups.update({t: [t] for t in targets})
    for i in remaining:
        if i not in targets:
            groups[targets[int(np.argmax([unit[i] @ unit[t] for t in targets]))]].append(i)
    return groups


def _inputs(seed: int, sizes: list[int], scattered: bool):
    x, valid = padded_batch(seed, sizes, scattered=scattered)
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(valid.shape, generator=generator, dtype=torch.float64)
    keys = torch.randn(*valid.shape, 8, generator=generator, dtype=torch.float64)
    return x, valid, attention, keys


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", RATIOS)
def test_matches_reference(seed, ratio):
    x, valid, attention, keys = _inputs(seed, SIZES[seed], scattered=seed == 0)
    k = counts(valid, ratio)
    contextual = torch.minimum(k, torch.tensor([3, 1, 0, 2][:len(k)]))
    merge = visionzip(x, valid, k, attention, keys=keys, contextual=contextual)
    assert_valid_selection(merge.selection(), valid, k)
    for b in range(len(k)):
        slots = valid[b].nonzero().squeeze(1)
        groups = reference_visionzip(tokens_of(x, valid, b), tokens_of(attention, valid, b), tokens_of(keys, valid, b),
                                     int(k[b]), int(contextual[b]))
        positions = sorted(groups)
        assert merge.indices[b][merge.mask[b]].tolist() == slots[positions].tolist()
        members = [sorted(groups[p]) for p in positions]
        expected = np.stack([tokens_of(x, valid, b)[m].mean(axis=0) for m in members]) if members else None
        if members:
            np.testing.assert_allclose(merge.features[b][merge.mask[b]].numpy(), expected, rtol=1e-12, atol=1e-12)
        assert merge.sizes[b][merge.mask[b]].tolist() == [len(m) for m in members]
        destination = {int(slots[m]): column for column, group in enumerate(members) for m in group}
        assert merge.destination[b].tolist() == [destination.get(n, -1) for n in range(valid.shape[1])]


def test_weights_reproduce_the_features_and_sum_to_one():
    x, valid, attention, _ = _inputs(4, [20, 9], scattered=True)
    merge = visionzip(x, valid, counts(valid, 0.5), attention)
    torch.testing.assert_close(merge.features, torch.bmm(merge.weights, x))
    torch.testing.assert_close(merge.weights.sum(dim=2), merge.mask.double())
    assert merge.weights[~valid[:, None, :].expand_as(merge.weights)].abs().max() == 0


def test_default_split_is_the_papers():
    assert default_contextual(torch.tensor([64, 128, 192, 1])).tolist() == [10, 20, 30, 0]


def test_keep_all_batch_invariance_and_errors():
    x, valid, attention, keys = _inputs(5, [11, 4, 15], scattered=True)
    everything = valid.sum(dim=1)
    merge = visionzip(x, valid, everything, attention)
    torch.testing.assert_close(merge.features[merge.mask], x[valid])

    def select(x, valid, k, attention, keys):
        return visionzip(x, valid, k, attention, keys=keys).selection()

    assert_batch_invariant(select, x, valid, counts(valid, 0.7), slotwise=(attention, keys))
    with pytest.raises(SelectorInputError, match="contextual"):
        visionzip(x, valid, counts(valid, 0.2), attention, contextual=torch.tensor([9, 9, 9]))
