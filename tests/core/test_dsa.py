"""DeepSeek sparse attention (Dots 3 Note, qk layout 'dots3'): the scorer reproduces each indexed layer's top-k
key restriction, so its scores are HF's eager attention weights; the indexer caches of pruned layers hold the
pruned layout; layouts that do not fit are refused; FLOPs refuse sparse-attention configs clearly."""

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import layers_of, load_case
from tests.layer_io import capture_layer_io
from tokenprune.errors import SpecError, UnsupportedError
from tokenprune.flops import TextShape, prefill_flops
from tokenprune.model_specs.dots3_note import Dots3LatentAttention
from tokenprune.plugins import registry
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.scoring.attention import attention_probs
from tokenprune.scoring.dsa import restrict_to_topk
from tokenprune.spec import spec_from_dict


def _layer_io(case, batch, index):
    """What decoder layer ``index`` of the eager model received, and its attention weights (B, H, S, S)."""
    model = case.models["eager"]
    layer = layers_of(case, model)[index]
    return layer, capture_layer_io(model, layer, layer.self_attn, batch.kwargs)


def _last_query_scores(case, layer, seen, mask_2d):
    bsz, n = mask_2d.shape
    with torch.no_grad():
        probs, found = attention_probs(resolve_spec(case.spec), layer, seen["hidden"], seen["rope"], seen["mask"],
                                       torch.arange(n).expand(bsz, n), mask_2d.bool(), torch.full((bsz, 1), n - 1))
    return probs[:, 0], found  # (B, n)


def test_variants_cover_indexed_and_dense_layers():
    layer_types = {v: load_case("dots3_note", v).models["eager"].config.text_config.layer_types
                   for v in (None, "topk", "dense")}
    assert layer_types[None] == layer_types["topk"] == ["indexed_attention", "sliding_attention"] * 2
    assert layer_types["dense"] == ["full_attention", "sliding_attention"] * 2  # use_dsa=False: no indexer
    dense = load_case("dots3_note", "dense")
    assert all(layer.self_attn.indexer is None for layer in layers_of(dense, dense.models["eager"]))


@pytest.mark.parametrize("variant", [None, "topk", "dense"])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["first", "sliding", "deeper"])
def test_scores_match_hf_eager_attention(variant, index):
    case = load_case("dots3_note", variant)
    batch = case.batch(case.models["eager"], "batch3")  # left-padded
    layer, seen = _layer_io(case, batch, index)
    ours, found = _last_query_scores(case, layer, seen, batch.kwargs["attention_mask"])
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)  # (B, n): last query, head mean
    assert found.source == "recompute"  # the cache holds latents, never read as keys
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-6)


def test_topk_variant_binds_and_its_restriction_is_needed(monkeypatch):
    """In the 'topk' variant an indexed layer's last query attends to index_topk keys only, fewer than its mask
    allows; scoring without the restriction would differ from HF."""
    case = load_case("dots3_note", "topk")
    batch = case.batch(case.models["eager"], "batch3")
    layer, seen = _layer_io(case, batch, 0)
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)  # (B, n)
    attended = (hf > 0).sum(dim=1)  # (B,)
    real = batch.kwargs["attention_mask"].sum(dim=1)  # (B,) keys the mask allows the last query
    topk = layer.self_attn.indexer.index_topk
    assert bool((attended == torch.clamp(real, max=topk)).all()), (attended, real)
    assert bool((real > topk).all()), "every prompt must be longer than index_topk"

    monkeypatch.setattr(Dots3LatentAttention, "restrict_keys", lambda self, *args, **kwargs: args[-1])
    dense, _ = _last_query_scores(case, layer, seen, batch.kwargs["attention_mask"])
    assert not torch.allclose(dense, hf, rtol=1e-3, atol=1e-4)


def test_restrict_to_topk_prefers_every_allowed_key_over_masked_ones():
    scores = torch.tensor([[[9.0, 1.0, 8.0, 3.0, 2.0, 7.0]]])  # (B=1, Q=1, n=6): masked keys score highest
    allowed = torch.tensor([False, True, False, True, True, False])[None, None, None, :]  # (1, 1, 1, 6)
    two = restrict_to_topk(allowed, scores, index_topk=2)
    assert two[0, 0, 0].tolist() == [False, False, False, True, True, False]  # the 2 best allowed keys
    five = restrict_to_topk(allowed, scores, index_topk=5)  # more than allowed: every allowed key, nothing else
    assert torch.equal(five, allowed)
    many = restrict_to_topk(allowed, scores, index_topk=2048)  # above the key count: min(index_topk, n)
    assert torch.equal(many, allowed)


def test_indexer_caches_of_pruned_layers_hold_the_pruned_layout():
    """After a cut, a layer computes its indexer keys from the pruned hidden states: its indexer cache has the
    length of its own K/V cache, shorter than an unpruned layer's, with no gather of the indexer cache."""
    case = load_case("dots3_note", "topk")
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, tp.Schedule.fastv(case.num_layers, layer=2, keep=0.5))
    with torch.no_grad():
        cache = compiled(**batch.kwargs, use_cache=True).past_key_values
    config = model.config.text_config
    lengths = {i: (cache.layers[i].indexer_keys.shape[1], cache.layers[i].keys.shape[-2])
               for i, kind in enumerate(config.layer_types) if kind == "indexed_attention"}
    assert all(indexer == keys for indexer, keys in lengths.values()), lengths
    assert lengths[2][0] < lengths[0][0] == batch.input_ids.shape[1]


def test_layouts_that_do_not_fit_are_refused():
    dots3 = load_case("dots3_note", None)
    data = dots3.spec.model_dump(exclude_none=True)
    data["attention"]["qk"] = "mla"  # DeepSeek-V3 MLA: refuses the indexer and k_rope_only_layernorm
    with pytest.raises(SpecError, match="MLA variant"):
        tp.compile(dots3.default_model, spec_from_dict(data), tp.Schedule.keep_all(dots3.num_layers))
    kimi = load_case("kimi_k25", None)
    attn = layers_of(kimi, kimi.default_model)[0].self_attn
    with pytest.raises(SpecError, match="k_rope_only_layernorm"):
        registry("qk").get("dots3")().check(attn)


def test_flops_refuse_sparse_attention_configs_clearly():
    config = load_case("dots3_note", None).models["eager"].config
    with pytest.raises(UnsupportedError, match="indexed_attention.*TextShape"):
        prefill_flops(config, tp.Schedule.keep_all(4), 10, 20)
    shape = TextShape(num_layers=4, hidden=64, intermediate=112, heads=4, kv_heads=4, head_dim=24)
    assert prefill_flops(shape, tp.Schedule.fastv(4, layer=2, keep=0.5), 10, 20).fraction < 1.0
