"""Prompt-keeping sliding caches (Unlimited-OCR's reference sliding-window attention) past the window."""

import functools

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import greedy
from tokenprune.testing.masking import dropped_per_layer, masked_reference
from tokenprune.errors import UnsupportedError
from tokenprune.rewrites.prompt_caches import without_evicted
from tokenprune.rewrites.state import CallState, Gather, Layout, Mode
from tokenprune.spec_testdata import load_test_model
from tokenprune.testing import build_test_model, make_test_inputs

WINDOW = 4
STEPS = 12  # evicts decoded tokens from step WINDOW + 2 on


@functools.lru_cache(maxsize=None)
def _models():
    spec, test = tp.load_spec("unlimited_ocr"), load_test_model("unlimited_ocr")
    text = {**test.config["text_config"], "sliding_window": WINDOW}
    test = test.model_copy(update={"config": {**test.config, "text_config": text}})
    models = {attn: build_test_model(spec, attn_implementation=attn, test=test) for attn in ("eager", "sdpa")}
    return spec, models


def _layers(model):
    return model.model.language_model.layers


def _reference(eager, batch, selection, steps, **kw):
    dropped = dropped_per_layer(batch.vision_mask, selection, len(_layers(eager)))
    with masked_reference(_layers(eager), dropped):
        return greedy(eager, batch, steps=steps, **kw)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("cuts", [[1.0, 1.0, 0.5, 0.5], [1.0, 0.75, 0.5, 0.25]])
def test_cached_generation_past_the_window_matches_the_masking_reference(attn, cuts):
    spec, models = _models()
    batch = make_test_inputs(spec, models[attn], [1], [6])  # one prompt: no padding
    compiled = tp.compile(models[attn], spec, tp.Schedule(cuts))
    tokens = greedy(compiled, batch, steps=STEPS)
    assert torch.equal(tokens, _reference(models["eager"], batch, tp.last_selection(compiled), STEPS))


def test_pruned_layers_declare_the_prompt_they_kept():
    spec, models = _models()
    batch = make_test_inputs(spec, models["sdpa"], [1], [6])
    compiled = tp.compile(models["sdpa"], spec, tp.Schedule([1.0, 0.75, 0.5, 0.5]))
    with torch.no_grad():
        out = compiled.generate(**batch.kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                suppress_tokens=batch.suppress_ids, pad_token_id=0, return_dict_in_generate=True)
    kept = {layer: len(k[0]) for layer, k in tp.last_selection(compiled).items()}
    prompt = batch.input_ids.shape[1]
    vision = int(batch.vision_mask.sum())
    expected = [prompt, prompt - vision + kept[1], prompt - vision + kept[2], prompt - vision + kept[2]]
    cache = out.past_key_values
    assert [layer.prefill_length for layer in cache.layers] == expected
    # Every layer slides the same decoded tokens: the last WINDOW - 1 are held after the prompt.
    assert all(layer.keys.shape[-2] == WINDOW - 1 for layer in cache.layers)


def test_padded_batch_is_refused_once_tokens_are_evicted():
    spec, models = _models()
    model = models["sdpa"]
    batch = make_test_inputs(spec, model, [1, 2], [5, 9])
    assert not bool(batch.kwargs["attention_mask"].bool().all())
    compiled = tp.compile(model, spec, tp.Schedule.fastv(4, layer=2, keep=0.5))
    calls = []
    hook = compiled.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(UnsupportedError, match=r"left-padded batch decoding past the prompt-keeping sliding window "
                                               r"\(4\) of pruned layers \[2, 3\] \(6 new tokens requested\)"):
        greedy(compiled, batch, steps=WINDOW + 2)
    hook.remove()
    assert calls == []  # refused at the start of generate(), before the prefill
    # Up to WINDOW + 1 new tokens nothing is evicted: exact.
    tokens = greedy(compiled, batch, steps=WINDOW + 1)
    assert torch.equal(tokens, _reference(models["eager"], batch, tp.last_selection(compiled), WINDOW + 1))
    # Without a cache nothing is evicted either (HF attends to every decoded token): exact at any length.
    tokens = greedy(compiled, batch, steps=STEPS, use_cache=False)
    expected = _reference(models["eager"], batch, tp.last_selection(compiled), STEPS, use_cache=False)
    assert torch.equal(tokens, expected)


def test_without_evicted_drops_the_oldest_decoded_columns():
    # Previous layout of 6 slots, 4 kept; 7 tokens after the prompt of which this call brings 1.
    kept = torch.tensor([[0, 2, 3, 5]])
    extra = torch.arange(6, 13)[None]
    g = Gather(rows=None, cols=torch.cat([kept, extra], 1), col_pad=torch.zeros(1, 11, dtype=torch.bool),
               q_pos=torch.tensor([[12]]), k_pos=torch.cat([kept, extra], 1), in_keys=13)
    layout = Layout(kept, torch.zeros_like(kept, dtype=torch.bool), torch.ones_like(kept, dtype=torch.bool))
    call = CallState(Mode.CACHED, layout, torch.tensor([2]), torch.tensor([0]), query_len=1, extra=7)
    out = without_evicted(g, call, window=4)
    # 6 earlier decoded tokens, the cache holds the last 3: columns 6..8 of the old layout are gone.
    assert out.in_keys == 10
    assert out.k_pos.tolist() == [[0, 2, 3, 5, 9, 10, 11, 12]]
    assert out.cols.tolist() == [[0, 2, 3, 5, 6, 7, 8, 9]]  # tail columns index the mask, which lacks them too
    call.extra = 3  # within the window: unchanged
    assert without_evicted(g, call, window=4) is g
