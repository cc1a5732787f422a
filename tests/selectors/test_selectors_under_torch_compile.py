"""Selector cuts under ``torch.compile``: a merging cut (``tome``) and a greedy drop-selector (``cdpruner``) give
the eager pruned model's logits and selection, and a repeated call does not recompile.

The backend counts the graphs and runs them unchanged (what is tested is what dynamo captures, as in
``tests/core/test_torch_compile.py``); each compiled model is called before any eager call of its own, so
transformers' lazy output-capture hooks are not installed outside the trace.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing import build_test_model, make_test_inputs

from ..core.test_torch_compile import GraphCounter

SPEC = tp.load_spec("llava")
SCHEDULE = tp.Schedule([1.0, 0.75, 0.75, 0.5])  # two cuts


@pytest.fixture(scope="module")
def model_and_batch():
    torch._dynamo.reset()
    model = build_test_model(SPEC)
    yield model, make_test_inputs(SPEC, model, [1, 1], [5, 8], seed=3)
    torch._dynamo.reset()


def _selection(model) -> dict[int, list[list[int]]]:
    return {layer: [t.tolist() for t in kept] for layer, kept in tp.last_selection(model).items()}


@pytest.mark.parametrize("scorer", ["tome", "cdpruner"])
def test_compiled_selector_cut_equals_eager(model_and_batch, scorer):
    model, batch = model_and_batch
    pruned = tp.compile(model, SPEC, SCHEDULE, scorer=scorer)
    compiled = torch.compile(pruned, backend=GraphCounter())
    with torch.no_grad():
        got = compiled(**batch.kwargs).logits
        got_selection, got_merges = _selection(pruned), tp.last_merges(pruned)
        with torch._dynamo.config.patch(error_on_recompile=True):
            again = compiled(**batch.kwargs).logits
        want = pruned(**batch.kwargs).logits
    assert torch.equal(got, want) and torch.equal(again, want)
    assert got_selection == _selection(pruned) and len(got_selection) == len(SCHEDULE.cuts)
    merges = tp.last_merges(pruned)
    assert got_merges.keys() == merges.keys() and all(torch.equal(got_merges[k], merges[k]) for k in merges)
    if scorer == "tome":  # the compiled cuts merged: some survivor's mean spans more than itself
        assert len(merges) == len(SCHEDULE.cuts)
        assert all(bool(((m > 0).sum(dim=-1) > 1).any()) for m in merges.values())
    else:
        assert not merges
