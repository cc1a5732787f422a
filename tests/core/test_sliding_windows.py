"""Cached decoding past the window of pruned sliding-window (and chunked) layers, for every bundled family that
has them: with a tiny window the prompt alone is longer than it, so every decode step evicts in Hugging Face's
unpruned cache. Cached generation must equal uncached generation and the masking reference's, on a left-padded
batch, under eager and sdpa."""

import functools

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import backends, greedy
from tokenprune.testing.masking import dropped_per_layer, masked_reference
from tokenprune.errors import UnsupportedError
from tokenprune.spec_testdata import TestModelSpec, load_test_model
from tokenprune.rewrites.sliding import WholeWindowLayer
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.testing.builders import build_test_config

WINDOW = 8
STEPS = 6
WINDOW_KEYS = ("sliding_window", "attention_chunk_size")
BOTH_BACKENDS = {"gemma3", "gemma4", "mistral3", "llama4"}  # the other families run one backend, to keep CI short


def _windowed_cases() -> list[tuple[str, str | None]]:
    """Bundled (spec, variant) pairs whose text model has a window that does not keep the prompt."""
    cases = []
    for name in tp.bundled_spec_names():
        spec = tp.load_spec(name)
        for variant in (None, *load_test_model(spec).variants):
            text = build_test_config(spec, variant).get_text_config()
            types = set(getattr(text, "layer_types", None) or ["sliding_attention"])
            policies = [spec.windowed_layers.get(kind) for kind in types]
            if any(p is not None and not p.keeps_prompt and getattr(text, p.size, None) for p in policies):
                cases.append((name, variant))
    return cases


CASES = _windowed_cases()


def _case_id(case) -> str:
    name, variant = case
    return name if variant is None else f"{name}-{variant}"


def _small_window(name: str, variant: str | None) -> tuple[tp.ModelSpec, TestModelSpec]:
    """The spec and its test data with ``variant`` merged into the configuration and every window shrunk to
    ``WINDOW``."""
    spec = tp.load_spec(name)
    test = load_test_model(spec)
    config = test.config if variant is None else _merge(test.config, test.variants[variant])
    text = {k: (WINDOW if k in WINDOW_KEYS and v else v) for k, v in config["text_config"].items()}
    eager_only = ["default"] if (variant or "default") in test.eager_only else []
    update = {"config": {**config, "text_config": text}, "variants": {}, "eager_only": eager_only}
    return spec, test.model_copy(update=update)


def _merge(base: dict, over: dict) -> dict:
    return {k: (_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v)
            for k, v in {**base, **over}.items()}


@functools.lru_cache(maxsize=None)
def _models(name: str, variant: str | None):
    spec, test = _small_window(name, variant)
    return spec, {attn: build_test_model(spec, attn_implementation=attn, seed=0, test=test)
                  for attn in backends(name, variant)}


def _backends_under_test(name: str, models: dict) -> list[str]:
    return list(models) if name in BOTH_BACKENDS else list(models)[-1:]


def _layers(spec, model):
    return tp.spec.resolve_module(tp.spec.resolve_module(model, spec.language_model, "language_model"),
                                  spec.decoder_layers, "decoder_layers")


def _schedule(spec, num_layers: int) -> tp.Schedule:
    first = max(1, load_test_model(spec).first_cut)
    return tp.Schedule([1.0] * first + [0.5] + [0.25] * (num_layers - first - 1))


def test_every_windowed_family_is_covered():
    covered = {name for name, _ in CASES}
    assert {"gemma3", "gemma4", "mistral3", "llama4"} <= covered
    assert ("mistral3", "sliding-window") in CASES and "unlimited_ocr" not in covered  # keeps_prompt: its own tests


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_cached_decoding_past_the_window_is_exact(case):
    spec, models = _models(*case)
    eager = models["eager"]
    num_layers = len(_layers(spec, eager))
    for attn in _backends_under_test(case[0], models):
        model = models[attn]
        batch = make_test_inputs(spec, model, [1, 2, 1], [5, 9, 3], seed=3)
        assert batch.input_ids.shape[1] > WINDOW + 1  # every decode step is past the window
        assert not bool(batch.kwargs["attention_mask"].bool().all())  # left padding
        compiled = tp.compile(model, spec, _schedule(spec, num_layers))
        cached = greedy(compiled, batch, steps=STEPS)
        selection = tp.last_selection(compiled)
        assert torch.equal(cached, greedy(compiled, batch, steps=STEPS, use_cache=False)), attn
        with masked_reference(_layers(spec, eager), dropped_per_layer(batch.vision_mask, selection, num_layers)):
            assert torch.equal(cached, greedy(eager, batch, steps=STEPS)), attn


def test_pruned_windowed_layers_keep_every_token_in_their_cache():
    spec, models = _models("gemma3", None)
    model = models["sdpa"]
    batch = make_test_inputs(spec, model, [1], [6])
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.5, 0.5, 0.25]))
    with torch.no_grad():
        out = compiled.generate(**batch.kwargs, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                                suppress_tokens=batch.suppress_ids, pad_token_id=0, return_dict_in_generate=True)
    kept = {layer: len(k[0]) for layer, k in tp.last_selection(compiled).items()}  # cuts before layers 1 and 3
    prompt, vision = batch.input_ids.shape[1], int(batch.vision_mask.sum())
    held = [layer.keys.shape[-2] for layer in out.past_key_values.layers]
    generated = STEPS - 1  # the last token is never fed back
    assert held == [prompt + generated] + [prompt - vision + kept[c] + generated for c in (1, 1, 3)]
    assert [isinstance(layer, WholeWindowLayer) for layer in out.past_key_values.layers] == [True, False] * 2
    # Without a cut, Hugging Face's sliding cache is left as it is.
    plain = tp.compile(model, spec, tp.Schedule.keep_all(4))
    with torch.no_grad():
        out = plain.generate(**batch.kwargs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True,
                             suppress_tokens=batch.suppress_ids, pad_token_id=0)
    assert not any(isinstance(layer, WholeWindowLayer) for layer in out.past_key_values.layers)


def test_a_cache_that_slides_by_slot_is_refused_before_any_work():
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicSlidingWindowLayer

    spec, models = _models("gemma3", None)
    model = models["sdpa"]
    batch = make_test_inputs(spec, model, [1], [6])
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.5, 0.5, 0.25]))
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():  # a sliding layer already holding tokens cannot be made whole
        cache.layers[2].update(torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16))
        assert type(cache.layers[2]) is DynamicSlidingWindowLayer
        with pytest.raises(UnsupportedError, match=r"layer 2's KV cache \(DynamicSlidingWindowLayer.*evicts tokens "
                                                   r"by slot"):
            compiled(**batch.kwargs, past_key_values=cache)


def test_a_static_sliding_cache_is_refused_at_the_start_of_generate():
    spec, models = _models("gemma3", None)
    model = models["sdpa"]
    batch = make_test_inputs(spec, model, [1], [6])
    compiled = tp.compile(model, spec, tp.Schedule([1.0, 0.5, 0.5, 0.25]))
    calls = []
    hook = _layers(spec, compiled)[0].register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(UnsupportedError, match=r"layer 2's KV cache \(StaticSlidingWindowLayer"):
            greedy(compiled, batch, steps=STEPS, cache_implementation="static")
    finally:
        hook.remove()
    assert calls == []  # no decoder layer ran
