"""Mistral Large 4 (spec mistral_large4, qk layout 'mistral_large4'): the scorer reproduces each layer's attention
weights (position-scaled queries, NoPE layers, the indexer's top-k, latents shared between layers); the
(hidden_states, topk_indices) pairs the layers hand each other are traced, stood in for and handed on unread;
configs whose layers would read them are refused at compile time; FLOPs refuse the sparse-attention config
clearly."""

import copy
import operator

import pytest
import torch
import transformers

import tokenprune as tp
from tests.conformance.cases import layers_of, load_case
from tests.layer_io import LAYER_INPUTS, capture_layer_io
from tokenprune.errors import SpecError, TraceError, UnsupportedError
from tokenprune.plugins import registry
from tokenprune.rewrites.gathers import hand_on_unread
from tokenprune.rewrites.probe_stack import tuple_output_layers
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.scoring.attention import attention_probs
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model
from tokenprune.testing.builders import _deep_merge

NAME = "mistral_large4"


def _layer_io(case, batch, index):
    """What decoder layer ``index`` of the eager model received, and its attention weights (B, H, S, S)."""
    model = case.models["eager"]
    layer = layers_of(case, model)[index]
    inputs = {**LAYER_INPUTS, "position_ids": "position_ids", "shared_kv": "shared_kv_states"}
    return layer, capture_layer_io(model, layer, layer.self_attn, batch.kwargs, inputs)


def _last_query_scores(case, layer, seen, mask_2d, position_ids, shared_kv=None):
    bsz, n = mask_2d.shape
    with torch.no_grad():
        probs, found = attention_probs(resolve_spec(case.spec), layer, seen["hidden"], seen["rope"], seen["mask"],
                                       torch.arange(n).expand(bsz, n), mask_2d.bool(), torch.full((bsz, 1), n - 1),
                                       position_ids=position_ids, shared_kv=shared_kv)
    return probs[:, 0], found  # (B, n)


def _model_with(text_overrides: dict):
    """A tiny eager model of the spec's test config with ``text_overrides`` merged into its text config."""
    test = load_test_model(NAME)
    kwargs = _deep_merge(copy.deepcopy(test.config), {"text_config": text_overrides})
    config = getattr(transformers, test.config_class)(**kwargs)
    torch.manual_seed(0)
    return transformers.MistralLarge4ForConditionalGeneration._from_config(config, attn_implementation="eager")


def test_test_models_randomise_the_query_scaling_and_have_a_nope_layer():
    """A fresh model's softmax_scaling is the identity (scale 0, bias 1); the test weights make it matter."""
    model = load_case(NAME, None).models["eager"]
    text = model.config.text_config
    assert text.no_rope_layers == [1, 1, 1, 0] and set(text.indexer_types) == {"full"}
    for layer in model.model.language_model.layers:
        for scaling in (layer.self_attn.softmax_scaling, layer.self_attn.indexer.softmax_scaling):
            assert bool((scaling.scale != 0).all()) and bool((scaling.bias != 1).all())
    fresh = _model_with({})
    assert bool((fresh.model.language_model.layers[0].self_attn.softmax_scaling.scale == 0).all())


@pytest.mark.parametrize("variant", [None, "topk", "kv_sharing"])
@pytest.mark.parametrize("index", [0, 2, 3], ids=["first", "deeper", "nope"])
def test_scores_match_hf_eager_attention(variant, index):
    case = load_case(NAME, variant)
    batch = case.batch(case.models["eager"], "batch3")  # left-padded, position ids from the mask
    layer, seen = _layer_io(case, batch, index)
    assert bool(layer.self_attn.use_rope) == (index != 3)
    ours, found = _last_query_scores(case, layer, seen, batch.kwargs["attention_mask"], seen["position_ids"],
                                     seen["shared_kv"])
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)  # (B, n): last query, head mean
    # Layer 2 of 'kv_sharing' expands layer 0's latents; otherwise the cache holds latents, never read as keys.
    assert found.source == ("shared" if variant == "kv_sharing" and index == 2 else "recompute")
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-6)


def test_a_layer_reusing_latents_it_did_not_receive_is_refused():
    case = load_case(NAME, "kv_sharing")
    batch = case.batch(case.models["eager"], "batch3")
    layer, seen = _layer_io(case, batch, 2)
    assert layer.self_attn.is_kv_shared_layer and layer.self_attn.kv_a_proj_with_mqa is None
    with pytest.raises(TraceError, match="reuses the shared latents 'rope'"):
        _last_query_scores(case, layer, seen, batch.kwargs["attention_mask"], seen["position_ids"], None)


def test_topk_variant_binds():
    """In the 'topk' variant the last query attends to index_topk keys only, fewer than its mask allows."""
    case = load_case(NAME, "topk")
    batch = case.batch(case.models["eager"], "batch3")
    layer, seen = _layer_io(case, batch, 1)
    attended = (seen["weights"][:, :, -1, :].float().mean(dim=1) > 0).sum(dim=1)  # (B,)
    real = batch.kwargs["attention_mask"].sum(dim=1)  # (B,)
    topk = layer.self_attn.indexer.index_topk
    assert bool((real > topk).all()) and bool((attended == topk).all()), (attended, real)


def test_scores_depend_on_the_layers_position_ids():
    """The query scaling is per absolute position: other ids give other scores, no ids a clear error."""
    case = load_case(NAME, "topk")
    batch = case.batch(case.models["eager"], "batch3")
    layer, seen = _layer_io(case, batch, 1)
    mask = batch.kwargs["attention_mask"]
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)
    shifted, _ = _last_query_scores(case, layer, seen, mask, seen["position_ids"] + 7)
    assert not torch.allclose(shifted, hf, rtol=1e-3, atol=1e-4)
    with pytest.raises(TraceError, match="position ids.*softmax|log\\(position_ids"):
        _last_query_scores(case, layer, seen, mask, None)


def test_layers_return_pairs_that_the_probe_stands_in_for():
    """Every layer returns (hidden_states, topk_indices); the stand-ins return pairs too, cut or not."""
    case = load_case(NAME, None)
    model = case.default_model
    compiled = tp.compile(model, case.spec, case.schedules()["multi"])
    graphs = compiled._tokenprune_language_model._tokenprune_graphs
    assert tuple_output_layers(graphs, "layers") == {i: 2 for i in range(case.num_layers)}


@pytest.mark.parametrize("schedule_key", ["fastv", "multi"])  # one cut (before layer 2); a cut before every layer
def test_top_k_indices_are_handed_on_unread_across_each_cut_only(schedule_key):
    """At a cut the next layer gets the indices of the layer before it through an 'unread' node; a layer after the
    cut gets its predecessor's own (already pruned) indices, never a second gather."""
    case = load_case(NAME, None)
    schedule = case.schedules()[schedule_key]
    compiled = tp.compile(case.default_model, case.spec, schedule)
    for gm in compiled._tokenprune_language_model._tokenprune_graphs.values():
        calls = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target).startswith("layers.")]
        for i, call in enumerate(calls[1:], start=1):
            value = call.kwargs["prev_topk_indices"]
            if i in schedule.cuts:
                assert value.target is hand_on_unread and value.args[0].args == (calls[i - 1], 1)
            else:
                assert value.target is operator.getitem and value.args == (calls[i - 1], 1)
    marker = torch.zeros(2, 3, 4, dtype=torch.int32)
    assert hand_on_unread(marker, None) is marker


@pytest.mark.parametrize("overrides", [{"indexer_types": ["full", "shared", "full", "shared"]},
                                       {"index_topk_pattern": "FSFS"}])
def test_configs_whose_layers_read_the_passed_on_top_k_are_refused(overrides):
    model = _model_with(overrides)
    assert model.config.text_config.indexer_types == ["full", "shared", "full", "shared"]
    with pytest.raises(SpecError, match=r"layers \[1, 3\].*indexer_types 'shared'.*all 'full'"):
        tp.compile(model, NAME, tp.Schedule.keep_all(4))


def test_other_mla_layouts_refuse_its_attention():
    attn = load_case(NAME, None).models["eager"].model.language_model.layers[0].self_attn
    for layout in ("mla", "dots3"):
        with pytest.raises(SpecError, match="has no"):
            registry("qk").get(layout)().check(attn)


def test_test_weights_are_seeded():
    spec = tp.load_spec(NAME)
    a, b = (build_test_model(spec, None, attn_implementation="eager", seed=3) for _ in range(2))
    scale = [m.model.language_model.layers[2].self_attn.softmax_scaling.scale for m in (a, b)]
    assert torch.equal(*scale)


def test_flops_refuse_the_sparse_attention_config_clearly():
    config = load_case(NAME, None).models["eager"].config
    with pytest.raises(UnsupportedError, match="indexed_attention.*TextShape"):
        tp.prefill_flops(config, tp.Schedule.keep_all(4), 10, 20)


def test_support_table_names_the_bundled_spec():
    from tokenprune.support import support_rows

    row = support_rows([("MistralLarge4ForConditionalGeneration", NAME)])[0]
    assert (row.status, row.spec) == ("supported", NAME)
