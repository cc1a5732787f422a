"""The shared output layout and input checks of the selectors."""

import pytest
import torch

from tokenprune.selectors import SelectorInputError, divprune, keep_counts
from tokenprune.selectors._common import merge_into, selection_from_keep


def test_keep_counts_follow_the_projects_rule():
    valid = torch.zeros(3, 100, dtype=torch.bool)
    valid[0], valid[1, :575 % 100], valid[2, :1] = True, True, True
    assert keep_counts(valid, 0.07).tolist() == [7, 6, 1]


def test_selection_pads_with_the_last_kept_index_and_round_trips():
    keep = torch.tensor([[False, True, False, True], [False, False, False, False], [True, False, False, False]])
    selection = selection_from_keep(keep)
    assert selection.indices.tolist() == [[1, 3], [0, 0], [0, 0]]
    assert selection.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert torch.equal(selection.keep_mask(4), keep)


def test_merge_into_averages_groups_at_the_owner_slot():
    x = torch.arange(12.0).reshape(1, 4, 3)
    merge = merge_into(x, torch.tensor([[2, -1, 2, 3]]))
    assert merge.indices.tolist() == [[2, 3]] and merge.destination.tolist() == [[0, -1, 0, 1]]
    torch.testing.assert_close(merge.features, torch.stack([(x[0, 0] + x[0, 2]) / 2, x[0, 3]])[None])
    assert merge.sizes.tolist() == [[2.0, 1.0]]


def test_bad_inputs_say_what_and_how_to_fix():
    x = torch.randn(2, 5, 4)
    valid = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(SelectorInputError, match="valid must be a \\(B, N\\) bool tensor.*at divprune"):
        divprune(x, valid.long(), torch.tensor([1, 1]))
    with pytest.raises(SelectorInputError, match="features must be \\(B, N, D\\)"):
        divprune(x[:, :4], valid, torch.tensor([1, 1]))
    with pytest.raises(SelectorInputError, match="floating point"):
        divprune(x.long(), valid, torch.tensor([1, 1]))
    with pytest.raises(SelectorInputError, match="keep_counts"):
        divprune(x, valid, torch.tensor([1]))


def test_the_micro_benchmark_runs_on_tiny_inputs():
    from tokenprune.selectors.benchmark import time_selectors

    medians = time_selectors(tokens=16, dim=8, keep=4, text_tokens=3, repeats=1)
    assert set(medians) == {"one N x N similarity (reference)", "divprune", "cdpruner", "dart"}
    assert all(seconds > 0 for seconds in medians.values())
