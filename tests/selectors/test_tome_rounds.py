"""ToMe in rounds down to a keep count, against a per-sample reference written from the paper."""

import math

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, keep_counts, tome_merge_to

from .helpers import SIZES, padded_batch, tokens_of


def reference_rounds(metric: np.ndarray, sizes: np.ndarray, k: int) -> list[int]:
    """Owner (a token index) of every token after bipartite soft matching rounds down to ``k`` tokens: tokens
    alternate into A (even) and B (odd), each A token matches its most cosine-similar B token, the best-matched
    ones merge into their B token by size-weighted averaging; a round merges what is left, at most |A|."""
    if k == 0:
        return [-1] * len(metric)
    groups = [[i] for i in range(len(metric))]  # original members of each current token
    anchor = list(range(len(metric)))           # where each current token sits: its surviving member's index
    feats, weight = metric.astype(float), sizes.astype(float)
    while len(groups) > k:
        r = min(len(groups) - k, math.ceil(len(groups) / 2))
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        side_a, side_b = list(range(0, len(groups), 2)), list(range(1, len(groups), 2))
        match = {a: max(side_b, key=lambda b: (unit[a] @ unit[b], -b)) for a in side_a}
        merged = set(sorted(match, key=lambda a: (-(unit[a] @ unit[match[a]]), a))[:r])
        into = {i: [i] + [a for a in merged if match[a] == i] for i in range(len(groups)) if i not in merged}
        survivors = sorted(into)
        new_w = [sum(weight[m] for m in into[s]) for s in survivors]
        feats = np.stack([sum(weight[m] * feats[m] for m in into[s]) / w for s, w in zip(survivors, new_w)])
        groups = [[g for m in into[s] for g in groups[m]] for s in survivors]
        anchor, weight = [anchor[s] for s in survivors], np.array(new_w)
    owner = [-1] * len(metric)
    for members, where in zip(groups, anchor):
        for m in members:
            owner[m] = where
    return owner


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_matches_reference_rounds(seed, ratio):
    x, valid = padded_batch(seed, SIZES[seed], scattered=True)
    sizes = torch.randint(1, 4, valid.shape, generator=torch.Generator().manual_seed(seed)).double()
    k = keep_counts(valid, ratio)
    owner = tome_merge_to(x, valid, k, sizes)
    for b in range(valid.shape[0]):
        slots = valid[b].nonzero().squeeze(1)
        expected = reference_rounds(tokens_of(x, valid, b), tokens_of(sizes, valid, b), int(k[b]))
        assert owner[b, slots].tolist() == [int(slots[o]) if o >= 0 else -1 for o in expected], b
        assert bool((owner[b, ~valid[b]] == -1).all())
        survivors = owner[b] == torch.arange(valid.shape[1])
        assert int(survivors.sum()) == int(k[b])


def test_batch_invariance():
    x, valid = padded_batch(5, [12, 5, 9], scattered=True)
    k = keep_counts(valid, 0.2)
    together = tome_merge_to(x, valid, k)
    for b in range(3):
        alone = tome_merge_to(x[b][valid[b]][None], torch.ones(1, int(valid[b].sum()), dtype=torch.bool), k[b:b + 1])
        slots = valid[b].nonzero().squeeze(1)
        assert together[b, slots].tolist() == slots[alone[0]].tolist()


def test_bad_counts_are_refused():
    x, valid = padded_batch(0, [4])
    with pytest.raises(SelectorInputError, match="asked to keep 5"):
        tome_merge_to(x, valid, torch.tensor([5]))
