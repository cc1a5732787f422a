"""Registered qk layouts (spec ``attention.qk``): the scorer reproduces HF's eager attention weights of
attention modules without q_proj/k_proj (multi-head latent attention, fused query_key_value), refuses a layout
that does not fit the module, and never reads an MLA cache entry (latents) as keys."""

import pytest
import torch

import tokenprune as tp
import tokenprune.scoring.scorers as scorers
from tests.conformance.cases import load_case
from tests.layer_io import capture_layer_io
from tokenprune.errors import SpecError
from tokenprune.plugins import registry
from tokenprune.plugins.resolve import resolve_spec
from tokenprune.scoring.attention import attention_probs
from tokenprune.spec import resolve_module

CASES = [("kimi_k25", None), ("kimi_k25", "no-q-lora"), ("fuyu", None)]


def _layer_io(model, spec, batch, index):
    """What decoder layer ``index`` received (hidden, rope, mask) and HF's eager attention weights (B, H, S, S)."""
    lm = resolve_module(model, spec.language_model, "language_model")
    layer = resolve_module(lm, spec.decoder_layers, "decoder_layers")[index]
    attention = resolve_module(layer, spec.layer.attention, "attention")
    return layer, capture_layer_io(model, layer, attention, batch.kwargs)


def _scores(spec, layer, seen, mask_2d):
    bsz, n = mask_2d.shape
    positions = torch.arange(n).expand(bsz, n)
    last = torch.full((bsz, 1), n - 1)
    with torch.no_grad():
        probs, found = attention_probs(resolve_spec(spec), layer, seen["hidden"], seen["rope"], seen["mask"], positions,
                                       mask_2d.bool(), last)
    return probs[:, 0], found  # (B, n)


@pytest.mark.parametrize("case_key", CASES, ids=lambda c: "-".join(x for x in c if x))
def test_scores_match_hf_eager_attention(case_key):
    case = load_case(*case_key)
    model = case.models["eager"]
    batch = case.batch(model, "batch3")  # left-padded
    layer, seen = _layer_io(model, case.spec, batch, 1)
    ours, found = _scores(case.spec, layer, seen, batch.kwargs["attention_mask"])
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)  # (B, n): last query, head mean
    assert found.source == "recompute"
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-6)


def test_wrong_rope_layout_is_detected():
    """Flipping MLA's rope_interleave (the layer rotates the other way) changes the scores: the test above
    would catch a layout that rotates wrongly."""
    case = load_case("kimi_k25", None)
    model = case.models["eager"]
    batch = case.batch(model, "batch3")
    layer, seen = _layer_io(model, case.spec, batch, 1)
    hf = seen["weights"][:, :, -1, :].float().mean(dim=1)
    config = layer.self_attn.config
    config.rope_interleave = not config.rope_interleave
    try:
        wrong, _ = _scores(case.spec, layer, seen, batch.kwargs["attention_mask"])
    finally:
        config.rope_interleave = not config.rope_interleave
    assert not torch.allclose(wrong, hf, rtol=1e-3, atol=1e-4)


def test_layout_that_does_not_fit_is_refused():
    case = load_case("kimi_k25", None)
    attn = case.models["eager"].model.language_model.layers[0].self_attn
    with pytest.raises(SpecError, match="query_key_value"):
        registry("qk").get("fused_qkv")().check(attn)
    fuyu = load_case("fuyu", None).models["eager"].model.language_model.layers[0].self_attn
    with pytest.raises(SpecError, match="kv_a_proj_with_mqa"):
        registry("qk").get("mla")().check(fuyu)
    bad = case.spec.model_copy(update={"attention": case.spec.attention.model_copy(update={"qk": "fused_qkv"})})
    with pytest.raises(SpecError, match="attention.qk"):
        tp.compile(case.models["eager"], bad, case.schedules()["fastv"])


@pytest.mark.parametrize("case_key, source", [(("kimi_k25", None), "recompute"), (("fuyu", None), "cache")],
                         ids=["mla", "fused-qkv"])
def test_cache_keys_only_where_exact(case_key, source, monkeypatch):
    """MLA caches latents (recompute, and say why); Persimmon caches its keys (read back, bit-identical)."""
    real = scorers.attention_probs
    seen = []

    def spy(*args, **kwargs):
        probs, found = real(*args, **kwargs)
        again, _ = real(*args, **{**kwargs, "key_policy": "recompute"})
        seen.append((found, probs, again))
        return probs, found

    monkeypatch.setattr(scorers, "attention_probs", spy)
    case = load_case(*case_key)
    model = case.default_model
    compiled = tp.compile(model, case.spec, case.schedules()["multi"], self_check="off")
    with torch.no_grad():
        compiled(**case.batch(model, "batch3").kwargs)
    assert seen
    for found, probs, again in seen:
        assert found.source == source
        assert torch.equal(probs, again)
    if source == "recompute":
        assert all("latent" in found.reason for found, _, _ in seen)
