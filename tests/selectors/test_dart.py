"""DART against a per-sample reference written from the paper (pivots by key norm, keep the least duplicated)."""

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, dart
from tokenprune.selectors.dart import key_norms

from .helpers import (RATIOS, SIZES, assert_batch_invariant, assert_keep_all, assert_valid_selection, counts,
                      kept_positions, padded_batch, tokens_of)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def _by_norm(keys: np.ndarray, count: int) -> list[int]:
    norms = np.abs(keys).sum(axis=1)
    return sorted(range(len(keys)), key=lambda i: (-norms[i], i))[:count]


def reference_dart(tokens, keys, k, num_pivots=4, text=None, text_keys=None, num_text_pivots=4) -> list[int]:
    """Vision pivots = largest key L1 norm (kept); each pivot in turn (vision then text, by decreasing norm)
    keeps its share of the remaining budget: the not-yet-kept tokens least cosine-similar to it."""
    if k == 0:
        return []
    vision_pivots = _by_norm(keys, min(num_pivots, k))
    pivots = [_unit(tokens[i]) for i in vision_pivots]
    if text is not None:
        pivots += [_unit(text[j]) for j in _by_norm(text_keys, min(num_text_pivots, len(text)))]
    kept, rest = set(vision_pivots), k - len(vision_pivots)
    for p, pivot in enumerate(pivots):
        quota = rest // len(pivots) + (1 if p < rest % len(pivots) else 0)
        candidates = sorted((i for i in range(len(tokens)) if i not in kept),
                            key=lambda i: (float(_unit(tokens[i]) @ pivot), i))
        kept.update(candidates[:quota])
    return sorted(kept)


def _text_batch(seed: int, sizes: list[int], dim: int = 24):
    text, text_valid = padded_batch(seed + 100, sizes, dim=dim)
    return text, text_valid


@pytest.mark.parametrize("with_text", [False, True])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", RATIOS)
def test_matches_reference(seed, ratio, with_text):
    x, valid = padded_batch(seed, SIZES[seed], scattered=seed == 1)
    keys = torch.randn(*x.shape[:2], 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    k = counts(valid, ratio)
    text, text_valid = _text_batch(seed, [3, 6, 2, 5][:len(k)]) if with_text else (None, None)
    selection = dart(x, valid, k, pivot_scores=key_norms(keys), text=text,
                     text_pivot_scores=None if text is None else key_norms(text), text_valid=text_valid)
    assert_valid_selection(selection, valid, k)
    for b in range(len(k)):
        expected = reference_dart(tokens_of(x, valid, b), tokens_of(keys, valid, b), int(k[b]),
                                  text=None if text is None else tokens_of(text, text_valid, b),
                                  text_keys=None if text is None else tokens_of(text, text_valid, b))
        assert kept_positions(selection, valid, b) == expected, b


def test_the_vision_pivots_are_kept_and_the_pivots_duplicates_dropped():
    x, valid = padded_batch(7, [12])
    keys = torch.ones(1, x.shape[1], 4, dtype=torch.float64)
    keys[0, 3] = 10.0                                   # token 3 has the largest key norm: the only pivot
    x[0, 8] = 2 * x[0, 3] + 1e-3                        # token 8 duplicates the pivot
    selection = dart(x, valid, torch.tensor([11]), pivot_scores=key_norms(keys), num_pivots=1)
    kept = kept_positions(selection, valid, 0)
    assert 3 in kept and 8 not in kept


def test_keep_all_and_batch_invariance():
    x, valid = padded_batch(8, [10, 4, 13], scattered=True)
    text, text_valid = _text_batch(8, [5, 2, 7])
    assert_keep_all(dart, x, valid)

    def select(x, valid, k, scores, text, text_valid):
        return dart(x, valid, k, pivot_scores=scores, text=text, text_valid=text_valid)

    scores = torch.rand(*x.shape[:2], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_batch_invariant(select, x, valid, counts(valid, 0.6), slotwise=(scores,), samplewise=(text, text_valid))


def test_a_pivot_count_of_zero_is_refused():
    x, valid = padded_batch(0, [5])
    with pytest.raises(SelectorInputError, match="at least one vision pivot"):
        dart(x, valid, torch.tensor([2]), num_pivots=0)


def test_pivot_scores_must_score_every_slot():
    x, valid = padded_batch(0, [5])
    with pytest.raises(SelectorInputError, match="pivot_scores"):
        dart(x, valid, torch.tensor([2]), pivot_scores=torch.ones(1, 3))
