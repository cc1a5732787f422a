"""Llama 4 beyond the conformance suite: the complex RoPE, the temperature-tuning limit, chunked attention."""

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import greedy
from tokenprune.testing.masking import dropped_per_layer, kept_positions, masked_reference
from tokenprune.errors import UnsupportedError
from tokenprune.plugins import registry
from tokenprune.rewrites.ops import gather_rope
from tokenprune.rewrites.state import Gather
from tokenprune.spec_testdata import TestModelSpec, load_test_model
from tokenprune.testing import build_test_model, make_test_inputs


SPEC = tp.load_spec("llama4")


def _test(**text) -> TestModelSpec:
    """The spec's test data with ``text`` merged into its text config."""
    test = load_test_model(SPEC)
    config = {**test.config, "text_config": {**test.config["text_config"], **text}}
    return test.model_copy(update={"config": config})


def _layers(model):
    return model.language_model.model.layers


def _pruned_vs_reference(spec, test, attn="sdpa"):
    """Max |pruned - masking reference| over the kept positions' logits of a 2-sample padded batch."""
    model = build_test_model(spec, attn_implementation=attn, test=test)
    eager = build_test_model(spec, attn_implementation="eager", test=test)
    batch = make_test_inputs(spec, model, [2, 1], [9, 4])
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.75, 0.5, 0.25]))
    with torch.no_grad():
        logits = compiled(**batch.kwargs).logits
    selection = tp.last_selection(compiled)
    with masked_reference(_layers(eager), dropped_per_layer(batch.vision_mask, selection, 4)), torch.no_grad():
        ref = eager(**batch.kwargs).logits
    diff = 0.0
    for b in range(2):
        pos = kept_positions(batch.vision_mask, selection, b)
        real = batch.kwargs["attention_mask"][b, pos].bool()
        diff = max(diff, float((logits[b, -len(pos):][real] - ref[b, pos][real]).abs().max()))
    return diff, batch


def test_rope_matches_hf_apply_rotary_emb_then_qk_norm():
    from transformers.models.llama4 import modeling_llama4 as hf

    model = build_test_model(SPEC)
    rope_layer, nope_layer = _layers(model)[0].self_attn, _layers(model)[1].self_attn
    assert rope_layer.use_rope and hasattr(rope_layer, "qk_norm") and not nope_layer.use_rope
    q, k = torch.randn(2, 5, 4, 16), torch.randn(2, 5, 2, 16)  # (B, S, H, Dh) as the layer holds them
    freqs = model.language_model.model.rotary_emb(q, torch.arange(5)[None] + 3)  # (1, S, Dh/2) complex
    hq, hk = hf.apply_rotary_emb(q, k, freqs)
    hq, hk = rope_layer.qk_norm(hq), rope_layer.qk_norm(hk)
    apply = registry("rope").get("llama4")
    torch.testing.assert_close(apply(q.transpose(1, 2), (freqs,), rope_layer), hq.transpose(1, 2), atol=0, rtol=0)
    torch.testing.assert_close(apply(k.transpose(1, 2), (freqs,), rope_layer), hk.transpose(1, 2), atol=0, rtol=0)
    assert torch.equal(apply(q.transpose(1, 2), (freqs,), nope_layer), q.transpose(1, 2))  # NoPE: untouched


def test_a_single_rope_tensor_is_gathered_along_the_token_axis():
    freqs = torch.polar(torch.ones(1, 6, 3), torch.randn(1, 6, 3))  # (1, n, Dh/2) complex
    rows = torch.tensor([[0, 2, 5], [1, 3, 4]])
    g = Gather(rows=rows, cols=rows, col_pad=torch.zeros_like(rows, dtype=torch.bool), q_pos=rows, k_pos=rows)
    out = gather_rope(freqs, g)
    assert out.shape == (2, 3, 3) and out.dtype == torch.complex64
    assert torch.equal(out[1], freqs[0, [1, 3, 4]])


def test_temperature_tuning_is_refused_from_floor_scale_on_and_would_be_wrong_there():
    # floor_scale 16: NoPE layers scale queries by a factor computed from each layer's own slot index, so a
    # pruned layer (fewer slots) scales differently once prompts reach 16 tokens.
    spec, test = SPEC, _test(floor_scale=16, attn_scale=2.0)
    unchecked = spec.model_copy(update={"tracing": spec.tracing.model_copy(update={"length_limits": []})})
    diff, batch = _pruned_vs_reference(unchecked, test)
    assert batch.input_ids.shape[1] >= 16 and diff > 1e-2  # why the limit exists
    model = build_test_model(spec, test=test)
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.75, 0.5, 0.25]))
    with pytest.raises(UnsupportedError, match=r"\d+ tokens \(prompt \+ generated\) reach floor_scale=16"):
        with torch.no_grad():
            compiled(**batch.kwargs)
    keep_all = tp.compile(model, spec, tp.Schedule.keep_all(4))  # nothing pruned: nothing to refuse
    with torch.no_grad():
        assert torch.equal(keep_all(**batch.kwargs).logits, model(**batch.kwargs).logits)


def test_generation_stops_with_a_clear_error_at_floor_scale():
    spec = SPEC
    model = build_test_model(spec, test=_test(floor_scale=64))
    batch = make_test_inputs(spec, model, [1], [6])
    prompt = batch.input_ids.shape[1]
    compiled = tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5))
    assert prompt + 4 < 64
    greedy(compiled, batch, steps=4)
    with pytest.raises(UnsupportedError, match=r"reach floor_scale=64"):
        greedy(compiled, batch, steps=64 - prompt + 1)


def test_chunked_prefill_and_decoding_past_a_chunk_are_exact():
    spec, test = SPEC, _test(attention_chunk_size=16)
    diff, batch = _pruned_vs_reference(spec, test)
    assert batch.input_ids.shape[1] > 16 and diff < 1e-4
    model, eager = build_test_model(spec, test=test), build_test_model(spec, attn_implementation="eager", test=test)
    compiled = tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5))
    tokens = greedy(compiled, batch, steps=3)  # the chunked caches are kept whole, the chunked mask slides
    assert torch.equal(tokens, greedy(compiled, batch, steps=3, use_cache=False))
    dropped = dropped_per_layer(batch.vision_mask, tp.last_selection(compiled), 4)
    with masked_reference(_layers(eager), dropped):
        assert torch.equal(tokens, greedy(eager, batch, steps=3))


def test_length_limits_and_windowed_layers_are_validated():
    from tokenprune.errors import SpecError

    spec = SPEC.model_copy(update={"tracing": SPEC.tracing.model_copy(update={"length_limits": ["floor_scal"]})})
    with pytest.raises(SpecError, match=r"config has no attribute 'floor_scal'.*nearest names: \['floor_scale'"):
        tp.compile(build_test_model(spec), spec, tp.Schedule.fastv(4, layer=2, keep=0.5))
    with pytest.raises(SpecError, match=r"unknown key 'tracing.windowed_layers.chunked_attention.keep'"):
        tp.spec.spec_from_dict({**tp.load_spec("llama4").model_dump(),
                                "tracing": {"windowed_layers": {"chunked_attention": {"size": "x", "keep": 1}}}})
