"""A cut before the first decoder layer (``keep_ratio[0] < 1``): the pre-LLM selectors' own setting.

On tiny LLaVA, Qwen2-VL and Qwen2.5-VL (3-D mRoPE) models, a left-padded batch of three prompts: per-sample
counts ceil(r * N_b) at layer 0, logits equal to the masking reference (the dropped tokens masked as keys in every
layer, layer 0 included), cached == uncached == reference greedy generation (decode positions on the unpruned
numbering), batch invariance, and a layer-0 cut that keeps every token bit-identical to the original.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import UnsupportedError
from tokenprune.flops import TextShape, layer_flops
from tokenprune.scoring.scorers import layer0_selectors
from tokenprune.testing.masking import dropped_per_layer, masked_reference

from ..conformance.cases import greedy, layers_of, load_case
from ..selectors.conformance_checks import case_fixture, check_selector_call, logits_of

ATOL = 1e-4
MODELS = [(("llava", None), "eager"), (("llava", None), "sdpa"), (("qwen2_5_vl", None), "sdpa"),
          (("qwen2_5_vl", None), "eager"), (("qwen2_vl", None), "sdpa")]
# Every registered drop-selector and ranking scorer that works without a layer before the cut.
SELECTORS = layer0_selectors()
WHOLE_GRIDS = {"grid-downsample", "grid-pool"}


def _schedule(num_layers: int, first: float = 0.5, second: float = 0.25) -> tp.Schedule:
    """A cut before layer 0 and another before layer 2."""
    return tp.Schedule(([first, first] + [second] * num_layers)[:num_layers])


_logits = logits_of
setup = case_fixture(MODELS)


def _check_against_reference(case, model, batch, scorer: str) -> None:
    # The grid selectors need whole grids: they cut once, before layer 0.
    schedule = _schedule(case.num_layers, 0.5, 0.5 if scorer in WHOLE_GRIDS else 0.25)
    compiled = tp.compile(model, case.spec, schedule, scorer=scorer)
    selection = check_selector_call(case, batch, compiled)  # masking reference, cached == uncached, batch invariance
    assert sorted(selection) == list(schedule.cuts) == ([0] if scorer in WHOLE_GRIDS else [0, 2])
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], int(batch.vision_mask[b].sum()))
            assert bool(batch.vision_mask[b, kept].all()), "only vision tokens are pruned"
    assert bool(dropped_per_layer(batch.vision_mask, selection, case.num_layers)[0].any()), "pruned from layer 0 on"


def test_layer0_cut_matches_the_masking_reference(setup):
    case, model, batch = setup
    _check_against_reference(case, model, batch, "divprune")


@pytest.mark.parametrize("scorer", SELECTORS)
def test_every_layer0_selector_matches_the_masking_reference(scorer):
    case = load_case("qwen2_5_vl", None)
    model = case.models["sdpa"]
    _check_against_reference(case, model, case.batch(model, "batch3"), scorer)


def test_layer0_cut_keeping_every_token_is_bit_identical(setup):
    case, model, batch = setup
    schedule = _schedule(case.num_layers, 0.9999, 0.9998)  # ceil(r N) = N: cuts that must change nothing
    compiled = tp.compile(model, case.spec, schedule, scorer="divprune")
    assert torch.equal(_logits(compiled, batch), _logits(model, batch))
    assert sorted(tp.last_selection(compiled)) == [0, 2]  # the cuts ran
    assert torch.equal(greedy(compiled, batch, steps=3), greedy(model, batch, steps=3))


def test_layer0_beam_search_matches_the_reference():
    case = load_case("qwen2_5_vl", None)
    model, eager = case.models["sdpa"], case.models["eager"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, _schedule(case.num_layers), scorer="dart")
    got = greedy(compiled, batch, steps=4, num_beams=2)
    _logits(compiled, batch)  # the selection of the batch itself (beam search expands it)
    dropped = dropped_per_layer(batch.vision_mask, tp.last_selection(compiled), case.num_layers)
    with masked_reference(layers_of(case, eager), dropped):
        assert torch.equal(got, greedy(eager, batch, steps=4, num_beams=2))


def test_layer0_cache_reports_the_unpruned_length():
    """Hugging Face numbers decode positions and sizes decode masks from layer 0's cache length."""
    case = load_case("llava", None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, _schedule(case.num_layers), scorer="random-keep")
    with torch.no_grad():
        out = compiled(**batch.kwargs, use_cache=True)
    cache, length = out.past_key_values, batch.input_ids.shape[1]
    assert cache.get_seq_length() == length
    kept = out.logits.shape[1]  # the length after the last cut, batch-padding slots included
    assert length > cache.layers[0].keys.shape[-2] == cache.layers[1].keys.shape[-2] > kept
    assert cache.layers[2].keys.shape[-2] == kept


def test_layer0_hidden_states_entry_is_what_layer_0_receives():
    case = load_case("llava", None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, _schedule(case.num_layers), scorer="divprune")
    with torch.no_grad():
        out = compiled(**batch.kwargs, output_hidden_states=True)
    lengths = [h.shape[1] for h in out.hidden_states]
    assert lengths[0] == lengths[1] == out.logits.shape[1] + (lengths[0] - lengths[-1])
    assert lengths[0] < batch.input_ids.shape[1] and lengths[2] < lengths[1]


@pytest.mark.parametrize("scorer", ["last-token-attention", "text-mean-attention"])
def test_scorers_of_the_previous_layer_refuse_a_layer0_cut(scorer):
    case = load_case("llava", None)
    with pytest.raises(UnsupportedError, match=r"before layer 0 has none.*the cut before layer 0.*dart, divprune"):
        tp.compile(case.models["sdpa"], case.spec, _schedule(case.num_layers), scorer=scorer)
    tp.compile(case.models["sdpa"], case.spec, tp.Schedule.fastv(case.num_layers, 1, 0.5), scorer=scorer)


def test_a_cache_whose_first_layer_cannot_report_the_unpruned_length_is_refused():
    from transformers import StaticCache

    case = load_case("llava", None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch1")
    compiled = tp.compile(model, case.spec, _schedule(case.num_layers), scorer="divprune")
    cache = StaticCache(config=model.config, max_cache_len=batch.input_ids.shape[1] + 4)
    with pytest.raises(UnsupportedError, match="layer 0's KV cache of kind StaticLayer"), torch.no_grad():
        compiled(**batch.kwargs, past_key_values=cache, use_cache=True)


def test_families_that_cannot_cut_before_layer_0_refuse_at_compile():
    ocr = load_case("unlimited_ocr", None)  # layer 0 keeps the prompt in a sliding cache of its own
    with pytest.raises(UnsupportedError, match="first decoder layer, whose type 'reference_sliding_attention'"):
        tp.compile(ocr.models["eager"], ocr.spec, _schedule(ocr.num_layers), scorer="divprune")
    dsa = load_case("mistral_large4", None)  # layer 0's cache is an indexed (sparse-attention) layer
    with pytest.raises(UnsupportedError, match="layer 0's KV cache of kind DynamicIndexedLayer"):
        tp.compile(dsa.models["sdpa"], dsa.spec, _schedule(dsa.num_layers), scorer="divprune")


@pytest.mark.parametrize("name, mask", [("qwen3_vl", "visual_pos_masks"), ("granite4_vision", "vision_mask")])
def test_features_added_at_vision_positions_follow_a_layer0_cut(name, mask):
    """Qwen3-VL's DeepStack and Granite 4 Vision add vision features after the first layers, one row per vision
    position: the cut gathers the position mask and the kept rows for those additions."""
    case = load_case(name, None)
    model = case.models["sdpa"]
    _check_against_reference(case, model, case.batch(model, "batch3"), "divprune")
    compiled = tp.compile(model, case.spec, _schedule(case.num_layers), scorer="divprune")
    graphs = compiled._tokenprune_language_model._tokenprune_graphs.values()
    names = {node.name for gm in graphs for node in gm.graph.nodes}
    assert f"cut0_{mask}" in names and f"cut2_{mask}" not in names  # nothing is added after layer 2


def test_prefill_flops_count_layer_0_at_the_kept_length():
    shape = TextShape(num_layers=4, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16)
    report = tp.prefill_flops(shape, tp.Schedule([0.25, 0.25, 0.25, 0.0]), num_text_tokens=10,
                              num_vision_tokens=100)
    assert report.tokens_per_layer == (35, 35, 35, 10)
    assert report.per_layer[0] == layer_flops(shape, 35) < report.unpruned_per_layer[0] == layer_flops(shape, 110)
    cheapest_inside = tp.prefill_flops(shape, tp.Schedule.vtw(4, 1), 10, 100).fraction
    assert tp.prefill_flops(shape, tp.Schedule.vtw(4, 0), 10, 100).fraction < cheapest_inside


def test_the_masking_benchmark_baseline_refuses_a_layer0_cut():
    from tokenprune.bench.masking import MaskingBaseline

    case = load_case("llava", None)
    with pytest.raises(UnsupportedError, match="cut before layer 0 in the masking baseline"):
        MaskingBaseline(case.models["eager"], _schedule(case.num_layers))
