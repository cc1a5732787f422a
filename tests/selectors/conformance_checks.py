"""The conformance checks a compiled selector must pass on a padded batch (shared by the selector tests)."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing.masking import dropped_per_layer, kept_rows, masked_reference

from ..conformance.cases import greedy, layers_of, load_case
from ..conformance.test_conformance import _single

ATOL = 1e-4


def logits_of(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch.kwargs, **kwargs).logits


def case_fixture(models):
    """A module-scoped fixture over ``models``, ((case, variant), attention implementation) pairs, giving
    (case, model, the case's left-padded three-prompt batch)."""

    @pytest.fixture(scope="module", params=models, ids=lambda m: f"{m[0][0]}-{m[1]}")
    def setup(request):
        case_key, attn = request.param
        case = load_case(*case_key)
        model = case.models[attn]
        return case, model, case.batch(model, "batch3")

    return setup


def check_selector_call(case, batch, compiled) -> dict:
    """Run ``compiled`` on ``batch`` and check it against the masking reference (logits and greedy tokens), cached
    == uncached generation and batch invariance; return its selection."""
    logits = logits_of(compiled, batch)
    selection = tp.last_selection(compiled)
    # The pruned model equals the unpruned eager model with the dropped tokens masked out.
    eager = case.models["eager"]
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, eager), dropped, tp.last_merges(compiled)):  # merging selectors too
        ref_logits = logits_of(eager, batch)
        ref_tokens = greedy(eager, batch, steps=4)
    for _, got, expected in kept_rows(logits, ref_logits, batch.vision_mask, selection,
                                      batch.kwargs["attention_mask"]):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    cached = greedy(compiled, batch, steps=4, use_cache=True)
    assert torch.equal(cached, ref_tokens)
    assert torch.equal(greedy(compiled, batch, steps=4, use_cache=False), cached)

    # Each sample alone keeps the tokens it keeps in the batch.
    logits_of(compiled, batch)
    together = tp.last_selection(compiled)
    for b in range(batch.input_ids.shape[0]):
        single = _single(batch, b)
        alone = logits_of(compiled, single)
        offset = batch.input_ids.shape[1] - single.input_ids.shape[1]
        for layer, per_sample in tp.last_selection(compiled).items():
            assert torch.equal(per_sample[0] + offset, together[layer][b]), (layer, b)
        torch.testing.assert_close(logits[b, -alone.shape[1]:], alone[0], atol=ATOL, rtol=1e-4)
    return selection
