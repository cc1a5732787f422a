"""DivPrune against a per-sample reference written from the paper (greedy max-min cosine diversity)."""

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, divprune

from .helpers import (RATIOS, SIZES, assert_batch_invariant, assert_keep_all, assert_valid_selection, counts,
                      kept_positions, padded_batch, tokens_of)


def reference_divprune(tokens: np.ndarray, k: int) -> list[int]:
    """Max-Min Diversity, greedy: first the token farthest from its nearest neighbour, then repeatedly the token
    whose minimum cosine distance to the selected set is largest (ties: lowest index)."""
    unit = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
    distance = 1.0 - unit @ unit.T
    n, selected = len(tokens), []
    for _ in range(k):
        best, best_score = None, -np.inf
        for i in range(n):
            if i in selected:
                continue
            if selected:
                score = min(distance[i, j] for j in selected)
            else:
                score = min((distance[i, j] for j in range(n) if j != i), default=np.inf)
            if score > best_score:
                best, best_score = i, score
        selected.append(best)
    return sorted(selected)


@pytest.mark.parametrize("scattered", [False, True])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", RATIOS)
def test_matches_reference(seed, ratio, scattered):
    x, valid = padded_batch(seed, SIZES[seed], scattered=scattered)
    k = counts(valid, ratio)
    selection = divprune(x, valid, k)
    assert_valid_selection(selection, valid, k)
    for b in range(len(k)):
        assert kept_positions(selection, valid, b) == reference_divprune(tokens_of(x, valid, b), int(k[b])), b


def test_keep_all_and_batch_invariance():
    x, valid = padded_batch(4, [10, 3, 13], scattered=True)
    assert_keep_all(divprune, x, valid)
    assert_batch_invariant(divprune, x, valid, counts(valid, 0.4))


def test_float32_inputs_agree_with_the_reference():
    x, valid = padded_batch(5, [20, 17], dim=64, dtype=torch.float32)
    k = counts(valid, 0.25)
    selection = divprune(x, valid, k)
    for b in range(2):
        reference = reference_divprune(tokens_of(x, valid, b).astype(np.float64), int(k[b]))
        assert kept_positions(selection, valid, b) == reference


def test_an_exact_duplicate_is_kept_last():
    x, valid = padded_batch(6, [8])
    x[0, 5] = 3 * x[0, 2]                      # same direction: cosine distance 0
    selection = divprune(x, valid, torch.tensor([7]))
    assert kept_positions(selection, valid, 0) in ([0, 1, 2, 3, 4, 6, 7], [0, 1, 3, 4, 5, 6, 7])


def test_a_keep_count_above_the_token_count_is_refused():
    x, valid = padded_batch(0, [4, 6])
    with pytest.raises(SelectorInputError, match="sample 0 is asked to keep 5 of its 4"):
        divprune(x, valid, torch.tensor([5, 1]))
    with pytest.raises(SelectorInputError, match="keep counts must be"):
        divprune(x, valid, torch.tensor([1.0, 1.0]))
