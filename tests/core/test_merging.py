"""The merge op of a cut: survivors' rows become weighted means, in any hidden-state layout, prompt rows only."""

import torch

from tokenprune.rewrites.merging import carried_sizes, merge_hidden, merge_matrix, plan_merge
from tokenprune.rewrites.ops import _take

# Sample 0 keeps slots [0, 2, 3] of 5 (slot 3 absorbs 1 and 4); sample 1 keeps [1, 4] plus one batch-padding slot.
OWNER = torch.tensor([[-1, 3, 2, 3, 3], [-1, 1, -1, 1, 4]])
INDEX = torch.tensor([[0, 2, 3], [1, 1, 4]])
VALID = torch.tensor([[True, True, True], [False, True, True]])
SIZES = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0], [1.0, 1.0, 1.0, 4.0, 1.0]])
POSITIONS = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])


def _expected(hidden: torch.Tensor) -> torch.Tensor:  # hidden (B, n, D) -> (B, 3, D), written out by hand
    out = torch.stack([hidden[0, INDEX[0]], hidden[1, INDEX[1]]])
    out[0, 2] = (2 * hidden[0, 1] + 1 * hidden[0, 3] + 3 * hidden[0, 4]) / 6
    out[1, 1] = (1 * hidden[1, 1] + 4 * hidden[1, 3]) / 5
    return out


def test_survivor_rows_are_the_size_weighted_means():
    plan = plan_merge(OWNER, SIZES, INDEX, VALID, POSITIONS)
    assert plan.rows.tolist() == [[False, False, True], [False, True, False]]  # padding slot 0 of sample 1: no
    hidden = torch.randn(2, 5, 4)
    torch.testing.assert_close(merge_hidden(hidden, _take(hidden, INDEX, 1, 0), plan), _expected(hidden))
    assert carried_sizes(None, plan, INDEX).tolist() == [[1.0, 1.0, 3.0], [1.0, 2.0, 1.0]]
    weights = merge_matrix(plan, torch.tensor([[0, 2, 3], [11, 11, 14]]), 15)  # (B, P, P)
    torch.testing.assert_close(weights[0, 3, [1, 3, 4]], torch.tensor([2 / 6, 1 / 6, 3 / 6]))
    torch.testing.assert_close(weights[1, 11, [11, 13]], torch.tensor([0.2, 0.8]))
    assert int((weights > 0).sum()) == 5


def test_streams_first_layout_merges_every_stream():
    plan = plan_merge(OWNER, SIZES, INDEX, VALID, POSITIONS)
    stack = torch.randn(3, 2, 5, 4)  # (streams, B, n, D): batch axis 1, token axis 2
    got = merge_hidden(stack, _take(stack, INDEX, seq_dim=2, batch_dim=1), plan, token_axis=2, batch_axis=1)
    for stream in range(3):
        torch.testing.assert_close(got[stream], _expected(stack[stream]))


def test_tokens_after_the_prompt_pass_through():
    plan = plan_merge(OWNER, SIZES, INDEX, VALID, POSITIONS)
    hidden = torch.randn(2, 7, 4)  # a no-cache re-run: the prompt's 5 slots and 2 new tokens
    rows = torch.cat([INDEX, torch.tensor([[5, 6], [5, 6]])], dim=1)
    got = merge_hidden(hidden, _take(hidden, rows, 1, 0), plan)
    torch.testing.assert_close(got[:, :3], _expected(hidden[:, :5]))
    assert torch.equal(got[:, 3:], hidden[:, 5:])


def test_no_absorbed_token_means_no_merge():
    owner = torch.where(OWNER == torch.arange(5), OWNER, -1)
    assert plan_merge(owner, SIZES, INDEX, VALID, POSITIONS) is None
