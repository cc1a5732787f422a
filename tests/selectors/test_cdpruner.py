"""CDPruner against a per-sample reference written from the paper: the conditional DPP kernel and its greedy
MAP computed with plain determinants (no Cholesky updates)."""

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, cdpruner

from .helpers import (RATIOS, SIZES, assert_batch_invariant, assert_keep_all, assert_valid_selection, counts,
                      kept_positions, padded_batch, tokens_of)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def reference_kernel(tokens: np.ndarray, text: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """L = diag(q) S diag(q), S = cosine similarities, q = exp(alpha r), r = min-max normalised mean cosine
    similarity to the instruction's tokens, alpha = theta / (2 (1 - theta))."""
    relevance = (_unit(tokens) @ _unit(text).T).mean(axis=1)
    relevance = (relevance - relevance.min()) / (relevance.max() - relevance.min() + 1e-6)
    quality = np.exp(theta / (2 * (1 - theta)) * relevance)
    similarity = _unit(tokens) @ _unit(tokens).T
    np.fill_diagonal(similarity, 1.0)                # cos(x, x) = 1 exactly
    return quality[:, None] * similarity * quality[None, :], quality


def reference_cdpruner(tokens, text, k, theta=0.5) -> list[int]:
    """Greedy MAP: add the token maximising det(L_{S+i}) / det(L_S); once no token adds volume (gain <= 1e-6 of
    the largest diagonal entry), take the most relevant remaining ones. Ties: lowest index."""
    kernel, quality = reference_kernel(tokens, text, theta)
    selected, exhausted = [], False
    base = 1.0
    for _ in range(k):
        remaining = [i for i in range(len(tokens)) if i not in selected]
        gains = [np.linalg.det(kernel[np.ix_(selected + [i], selected + [i])]) / base for i in remaining]
        exhausted = exhausted or max(gains) <= 1e-6 * kernel.diagonal().max()
        scores = [quality[i] for i in remaining] if exhausted else gains
        best = remaining[int(np.argmax(scores))]
        if not exhausted:
            base *= gains[remaining.index(best)]
        selected.append(best)
    return sorted(selected)


def _text(seed: int, count: int):
    return padded_batch(seed + 200, [3, 7, 1, 5][:count])


@pytest.mark.parametrize("theta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", RATIOS)
def test_matches_reference(seed, ratio, theta):
    x, valid = padded_batch(seed, SIZES[seed], scattered=seed == 2)
    k = counts(valid, ratio)
    text, text_valid = _text(seed, len(k))
    selection = cdpruner(x, valid, k, text, text_valid, theta=theta)
    assert_valid_selection(selection, valid, k)
    for b in range(len(k)):
        expected = reference_cdpruner(tokens_of(x, valid, b), tokens_of(text, text_valid, b), int(k[b]), theta)
        assert kept_positions(selection, valid, b) == expected, b


def test_rank_exhaustion_falls_back_to_relevance():
    x, valid = padded_batch(3, [10], dim=3)          # rank 3: after 3 picks no token adds volume
    text, text_valid = _text(3, 1)
    text = text[:, :, :3]
    selection = cdpruner(x, valid, torch.tensor([7]), text, text_valid)
    expected = reference_cdpruner(tokens_of(x, valid, 0), tokens_of(text, text_valid, 0), 7)
    assert kept_positions(selection, valid, 0) == expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_exhaustion_in_a_batch_matches_reference(dtype):
    """Samples that exhaust their rank at different steps (or never) share one batch."""
    x, valid = padded_batch(4, [10, 4, 8, 2], dim=3, scattered=True, dtype=dtype)
    text, text_valid = _text(4, 4)
    text = text[:, :, :3].to(dtype)
    k = torch.tensor([7, 4, 2, 1])                   # exhausted after 3 picks: samples 0 and 1, not 2 and 3
    selection = cdpruner(x, valid, k, text, text_valid)
    assert_valid_selection(selection, valid, k)
    for b in range(len(k)):
        expected = reference_cdpruner(tokens_of(x, valid, b).astype(np.float64),
                                      tokens_of(text, text_valid, b).astype(np.float64), int(k[b]))
        assert kept_positions(selection, valid, b) == expected, b


def test_relevance_steers_the_choice():
    x, valid = padded_batch(9, [12])
    text = x[:, 4:5].clone()                          # the instruction looks exactly like token 4
    kept = kept_positions(cdpruner(x, valid, torch.tensor([1]), text, theta=0.9), valid, 0)
    assert kept == [4]


def test_keep_all_batch_invariance_and_errors():
    x, valid = padded_batch(10, [9, 3, 14], scattered=True)
    text, text_valid = _text(10, 3)
    assert_keep_all(lambda x, v, k: cdpruner(x, v, k, text, text_valid), x, valid)
    assert_batch_invariant(cdpruner, x, valid, counts(valid, 0.5), samplewise=(text, text_valid))
    with pytest.raises(SelectorInputError, match="theta"):
        cdpruner(x, valid, counts(valid, 0.5), text, text_valid, theta=1.0)
    with pytest.raises(SelectorInputError, match="text features have 5 dimensions"):
        cdpruner(x, valid, counts(valid, 0.5), text[:, :, :5], text_valid)
