"""Family-specific behaviour beyond the shared conformance suite: refusals and policies."""

import torch

import tokenprune as tp
from tests.conformance.cases import greedy, load_case
from tokenprune.testing.masking import dropped_per_layer, kept_positions, masked_reference
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model, make_test_inputs


def test_image_and_video_spans_are_counted_together_per_sample():
    case = load_case("qwen2_vl", None)
    model = case.models["sdpa"]
    batch = make_test_inputs(case.spec, model, [2, 1], [4, 6])
    cfg = model.config
    images = (batch.input_ids == cfg.image_token_id).sum(1)
    videos = (batch.input_ids == cfg.video_token_id).sum(1)
    assert int(videos[0]) > 0 and int(images[0]) > 0  # sample 0 carries an image and a video
    compiled = tp.compile(model, case.spec, tp.Schedule.fastv(4, layer=2, keep=0.3))
    with torch.no_grad():
        compiled(**batch.kwargs)
    kept = tp.last_selection(compiled)[2]
    for b in range(2):
        assert len(kept[b]) == tp.keep_count(0.3, int(images[b] + videos[b]))


def _gemma3_small_window():
    """The Gemma 3 spec and its test data with a 16-token window."""
    test = load_test_model("gemma3")
    text = {**test.config["text_config"], "sliding_window": 16}
    return tp.load_spec("gemma3"), test.model_copy(update={"config": {**test.config, "text_config": text}})


def test_gemma3_prefill_longer_than_the_window_matches_the_masking_reference():
    spec, test = _gemma3_small_window()
    model, eager = build_test_model(spec, test=test), build_test_model(spec, attn_implementation="eager", test=test)
    batch = make_test_inputs(spec, model, [2, 1], [9, 4])
    assert batch.input_ids.shape[1] > 16
    schedule = tp.Schedule([1.0, 0.5, 0.5, 0.25])
    compiled = tp.compile(model, spec, schedule)
    with torch.no_grad():
        logits = compiled(**batch.kwargs).logits
    selection = tp.last_selection(compiled)
    layers = tp.spec.resolve_module(eager, "model.language_model.layers", "layers")
    with masked_reference(layers, dropped_per_layer(batch.vision_mask, selection, 4)), torch.no_grad():
        ref = eager(**batch.kwargs).logits
    for b in range(2):
        pos = kept_positions(batch.vision_mask, selection, b)
        real = batch.kwargs["attention_mask"][b, pos].bool()
        torch.testing.assert_close(logits[b, -len(pos):][real], ref[b, pos][real], atol=1e-4, rtol=1e-4)


def test_gemma3_cached_decoding_past_the_window_equals_no_cache():
    spec, test = _gemma3_small_window()
    model = build_test_model(spec, test=test)
    batch = make_test_inputs(spec, model, [1], [3])
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.5, 0.5, 0.25]))
    assert batch.input_ids.shape[1] + 4 > 16  # (every family with windows: tests/core/test_sliding_windows.py)
    assert torch.equal(greedy(compiled, batch, steps=4), greedy(compiled, batch, steps=4, use_cache=False))
