"""The conformance suite, run for every bundled spec, both attention backends and two batch shapes."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing.masking import dropped_per_layer, kept_rows, masked_reference

from .cases import (BATCHES, case_backend_pairs, case_id, compiled_case, greedy, layers_of, load_case, pair_id,
                    spec_cases)

ATOL = 1e-4
per_backend = pytest.mark.parametrize("pair", case_backend_pairs(), ids=pair_id)
per_case = pytest.mark.parametrize("case_key", spec_cases(), ids=case_id)


def _case(case_key):
    return load_case(*case_key)


def _multi_cut_batch3(pair):
    """The case, the batch of three for its ``attn`` model and that model compiled with the multi-cut schedule."""
    case_key, attn = pair
    case = _case(case_key)
    return case, case.batch(case.models[attn], "batch3"), compiled_case(case_key, attn, "multi")


def _logits(model, batch, **kw):
    with torch.no_grad():
        return model(**batch.kwargs, **kw).logits


@per_backend
@pytest.mark.parametrize("batch_key", BATCHES)
def test_keep_all_is_bit_identical(pair, batch_key):
    case_key, attn = pair
    case = _case(case_key)
    model = case.models[attn]
    batch = case.batch(model, batch_key)
    compiled = compiled_case(case_key, attn, "keep-all")
    assert torch.equal(_logits(compiled, batch), _logits(model, batch))
    assert torch.equal(greedy(compiled, batch), greedy(model, batch))


@per_backend
@pytest.mark.parametrize("batch_key", BATCHES)
@pytest.mark.parametrize("schedule_key", ["fastv", "multi", "withdraw"])
def test_pruned_matches_masking_reference(pair, batch_key, schedule_key):
    case_key, attn = pair
    case = _case(case_key)
    schedule = case.schedules()[schedule_key]
    model, eager = case.models[attn], case.models["eager"]
    batch = case.batch(model, batch_key)
    compiled = compiled_case(case_key, attn, schedule_key)
    logits = _logits(compiled, batch)
    selection = tp.last_selection(compiled)
    assert sorted(selection) == list(schedule.cuts)
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            n_vis = int(batch.vision_mask[b].sum())
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], n_vis)
            assert bool(batch.vision_mask[b, kept].all()), "only vision tokens are pruned"
            assert torch.equal(kept, kept.sort().values), "kept tokens keep their original order"

    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, eager), dropped):
        ref_logits = _logits(eager, batch)
        ref_tokens = greedy(eager, batch)
    for _, got, expected in kept_rows(logits, ref_logits, batch.vision_mask, selection, batch.kwargs["attention_mask"]):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    assert torch.equal(greedy(compiled, batch), ref_tokens)


@per_backend
@pytest.mark.parametrize("schedule_key", ["fastv", "multi"])
def test_kept_set_is_topk_of_hf_eager_attention(pair, schedule_key):
    case_key, attn = pair
    case = _case(case_key)
    model, eager = case.models[attn], case.models["eager"]
    batch = case.batch(model, "batch3")
    compiled = compiled_case(case_key, attn, schedule_key)
    _logits(compiled, batch)
    selection = tp.last_selection(compiled)
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, eager), dropped):
        attentions = eager(**batch.kwargs, output_attentions=True).attentions
    for layer, per_sample in selection.items():
        weights = attentions[layer - 1][:, :, -1, :].float().mean(dim=1)  # (B, S): last query, head mean
        for b, kept in enumerate(per_sample):
            candidates = batch.vision_mask[b] & ~dropped[layer - 1][b]
            scores = weights[b].masked_fill(~candidates, -1.0)
            k = len(kept)
            expected = torch.topk(scores, k).indices.sort().values if k else kept
            if not torch.equal(expected, kept):
                # Near-ties may order differently: the boundary scores must then be equal to rounding.
                boundary = scores.sort(descending=True).values
                assert torch.isclose(boundary[k - 1], boundary[k], atol=1e-6), (layer, b, expected, kept)


@per_backend
def test_cached_generation_equals_uncached(pair):
    case, batch, compiled = _multi_cut_batch3(pair)
    cached = greedy(compiled, batch, use_cache=True)
    selection = tp.last_selection(compiled)
    uncached = greedy(compiled, batch, use_cache=False)
    rows = slice(None)
    if case.test.padded_decode_differs:
        # Hugging Face's own model generates differently without a cache on padded rows: there, the uncached
        # generation must equal the masking reference's uncached generation instead.
        rows = batch.kwargs["attention_mask"].bool().all(dim=1)
        assert bool(rows.any()), "the batch needs an unpadded sample"
        dropped = dropped_per_layer(batch.vision_mask, tp.last_selection(compiled), case.num_layers)
        with masked_reference(layers_of(case, case.models["eager"]), dropped):
            assert torch.equal(uncached, greedy(case.models["eager"], batch, use_cache=False))
    assert torch.equal(cached[rows], uncached[rows])
    after = tp.last_selection(compiled)
    assert all(torch.equal(a, b) for layer in selection for a, b in zip(selection[layer], after[layer]))


@per_backend
def test_batch_invariance(pair):
    _, batch, compiled = _multi_cut_batch3(pair)
    logits = _logits(compiled, batch)
    together = tp.last_selection(compiled)
    for b in range(batch.input_ids.shape[0]):
        single = _single(batch, b)
        alone = _logits(compiled, single)
        offset = batch.input_ids.shape[1] - single.input_ids.shape[1]
        selection = tp.last_selection(compiled)
        for layer in together:
            assert torch.equal(selection[layer][0] + offset, together[layer][b])
        n = alone.shape[1]
        torch.testing.assert_close(logits[b, -n:], alone[0], atol=ATOL, rtol=1e-4)


def _single(batch, b):
    """Sample ``b`` of a batch on its own, padding removed."""
    from tokenprune.testing.builders import TestBatch

    real = batch.kwargs["attention_mask"][b].bool()
    kwargs = {"input_ids": batch.input_ids[b:b + 1, real], "attention_mask": batch.kwargs["attention_mask"][b:b + 1, real]}
    kwargs.update(_single_pixels(batch, b))  # pixels and any other per-sample inputs of the family
    return TestBatch(kwargs=kwargs, vision_mask=batch.vision_mask[b:b + 1, real], image_token_id=batch.image_token_id,
                     vision_token_ids=batch.vision_token_ids)


def _single_pixels(batch, b):
    return batch.extra["split"](b) if "split" in batch.extra else {}


@per_case
def test_original_model_unaffected(case_key):
    case = _case(case_key)
    model = case.default_model
    batch = case.batch(model, "batch3")
    before = _logits(model, batch)
    keys = list(model.state_dict())
    compiled = tp.compile(model, case.spec, case.schedules()["multi"])
    pruned = _logits(compiled, batch)
    assert pruned.shape[1] < before.shape[1]
    assert torch.equal(_logits(model, batch), before), "the input model changed behaviour"
    assert list(compiled.state_dict()) == keys
    shared = {id(p) for p in model.parameters()}
    assert all(id(p) in shared for p in compiled.parameters()), "compile copied weights"
    assert torch.equal(_logits(compiled, batch), pruned), "side-by-side use changed the compiled model"
