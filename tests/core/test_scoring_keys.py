"""Scorers read the scoring layer's keys back from the KV cache; selections stay exactly those of a recompute."""

from types import SimpleNamespace

import pytest
import torch

import tokenprune as tp
import tokenprune.scoring.scorers as scorers
from tests.conformance.cases import greedy, load_case
from tokenprune.scoring.keys import find_cached_keys
from tokenprune.testing import make_test_inputs
from tokenprune.testing.builders import build_test_config

# Plain GQA, q/k norms (Gemma 3, Qwen 3), mRoPE (Qwen2-VL), interleaved RoPE in sliding layers only (Cohere 2),
# soft-capping (Gemma 2), a sliding window longer than the prompt (Mistral), scaled queries and NoPE layers
# (Muse Glimmer), post-norm layers with RoPE on sliding layers only (EXAONE 4.5).
CASES = [("llava", None), ("gemma3", None), ("qwen2_vl", None), ("qwen3_vl", None), ("cohere2_vision", None),
         ("paligemma", "gemma2-text"), ("mistral3", "sliding-window"), ("internvl", None),
         ("muse_glimmer", None), ("exaone4_5", None)]


@pytest.fixture
def both_paths(monkeypatch):
    """Every scoring-layer attention computed twice, from the cache and by recomputing; records both."""
    real = scorers.attention_probs
    seen = []

    def spy(*args, **kwargs):
        probs, found = real(*args, **kwargs)
        again, _ = real(*args, **{**kwargs, "key_policy": "recompute"})
        seen.append((found.source, probs, again))
        return probs, found

    monkeypatch.setattr(scorers, "attention_probs", spy)
    return seen


@pytest.mark.parametrize("case_key", CASES, ids=lambda c: "-".join(x for x in c if x))
def test_cached_keys_give_bit_identical_attention(case_key, both_paths):
    case = load_case(*case_key)
    for attn, model in case.models.items():
        batch = case.batch(model, "batch3")  # left-padded, samples with different vision-token counts
        both_paths.clear()
        compiled = tp.compile(model, case.spec, case.schedules()["multi"], self_check="off")
        with torch.no_grad():
            compiled(**batch.kwargs)
        assert both_paths and all(source == "cache" for source, _, _ in both_paths), attn
        for _, cached, recomputed in both_paths:
            assert torch.equal(cached, recomputed), attn
        assert all(v.startswith("cache:") for v in tp.scoring_key_sources(compiled).values())


@pytest.mark.parametrize("case_key", CASES[:3], ids=lambda c: c[0])
@pytest.mark.parametrize("scorer", ["last-token-attention", "text-mean-attention"])
def test_policies_select_the_same_tokens(case_key, scorer):
    case = load_case(*case_key)
    model = case.default_model
    batch = case.batch(model, "batch3")
    out = {}
    for policy in ("auto", "recompute"):
        compiled = tp.compile(model, case.spec, case.schedules()["multi"], scorer=scorer, scoring_keys=policy)
        with torch.no_grad():
            logits = compiled(**batch.kwargs).logits
        out[policy] = (tp.last_selection(compiled), logits, tp.scoring_key_sources(compiled))
    (sel_a, logits_a, src_a), (sel_r, logits_r, src_r) = out["auto"], out["recompute"]
    assert all(torch.equal(a, b) for layer in sel_a for a, b in zip(sel_a[layer], sel_r[layer]))
    assert torch.equal(logits_a, logits_r)
    assert all(v.startswith("cache:") for v in src_a.values())
    assert all(v == "recompute: policy 'recompute'" for v in src_r.values())


def test_without_a_cache_keys_are_recomputed_and_selection_is_unchanged():
    case = load_case("llava", None)
    model = case.default_model
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, case.schedules()["multi"])
    with torch.no_grad():
        compiled(**batch.kwargs, use_cache=True)
        cached = tp.last_selection(compiled)
        compiled(**batch.kwargs, use_cache=False)
    assert all(v.startswith("recompute: no KV cache") for v in tp.scoring_key_sources(compiled).values())
    uncached = tp.last_selection(compiled)
    assert all(torch.equal(a, b) for layer in cached for a, b in zip(cached[layer], uncached[layer]))


def test_decode_steps_reuse_the_prefill_selection_without_scoring():
    case = load_case("qwen3_vl", None)
    model = case.default_model
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, case.schedules()["multi"])
    tokens = greedy(compiled, batch)
    sources = tp.scoring_key_sources(compiled)
    assert sources and all(v.startswith("cache:") for v in sources.values())  # set by the prefill only
    assert torch.equal(tokens, greedy(compiled, batch, use_cache=False))


def test_bf16_uses_the_cache_and_selects_like_a_recompute():
    spec = tp.load_spec("llava")
    from tokenprune.testing import build_test_model

    model = build_test_model(spec, dtype=torch.bfloat16)
    batch = make_test_inputs(spec, model, [1, 2, 1], [5, 9, 3], seed=3)
    schedule = tp.Schedule([1.0, 0.75, 0.5, 0.25])
    picks = []
    for policy in ("auto", "recompute"):
        compiled = tp.compile(model, spec, schedule, scoring_keys=policy)
        with torch.no_grad():
            compiled(**batch.kwargs)
        picks.append(tp.last_selection(compiled))
    assert all(torch.equal(a, b) for layer in picks[0] for a, b in zip(picks[0][layer], picks[1][layer]))


def test_sliding_window_shorter_than_the_prompt_reads_the_whole_cache():
    """Gemma 3 with a 16-token window: a pruned model keeps its sliding layers' caches whole, so every scoring
    layer reads its keys from the cache (Hugging Face's own sliding cache would keep only 15)."""
    import transformers

    spec = tp.load_spec("gemma3")
    config = build_test_config(spec)
    config.text_config.sliding_window = 16
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    batch = make_test_inputs(spec, model, [1, 2, 1], [5, 9, 3], seed=3)
    schedule = tp.Schedule([1.0, 0.75, 0.5, 0.25])  # scoring layers 0 (sliding), 1 (full), 2 (sliding)
    picks = []
    for policy in ("auto", "recompute"):
        compiled = tp.compile(model, spec, schedule, scoring_keys=policy)
        with torch.no_grad():
            compiled(**batch.kwargs)
        picks.append(tp.last_selection(compiled))
        if policy == "auto":
            sources = tp.scoring_key_sources(compiled)
            assert all(sources[cut].startswith("cache:") for cut in (1, 2, 3)), sources
    assert all(torch.equal(a, b) for layer in picks[0] for a, b in zip(picks[0][layer], picks[1][layer]))


def test_next_layer_scorer_always_recomputes():
    case = load_case("llava", None)
    batch = case.batch(case.default_model, "batch1")
    compiled = tp.compile(case.default_model, case.spec, case.schedules()["fastv"], scorer="next-layer-attention")
    with torch.no_grad():
        compiled(**batch.kwargs)
    assert all(v == "recompute: the next layer has not run" for v in tp.scoring_key_sources(compiled).values())


# ---------------------------------------------------------------- the lookup's refusals, one by one
class DynamicLayer:  # same class name as transformers': only the exact plain layers are read
    def __init__(self, keys):
        self.keys, self.is_initialized = keys, True


class QuantizedLayer(DynamicLayer):
    pass


HIDDEN = torch.zeros(2, 5, 8)  # (B, n, D)
ATTN = SimpleNamespace(layer_idx=1)


def _cache(layer, offloading=False):
    return SimpleNamespace(layers=[DynamicLayer(torch.zeros(2, 2, 5, 4)), layer], offloading=offloading)


@pytest.mark.parametrize("cache, attn, policy, reason", [
    (_cache(DynamicLayer(torch.zeros(2, 2, 5, 4))), ATTN, "recompute", "policy 'recompute'"),
    (None, ATTN, "auto", "no KV cache"),
    (_cache(DynamicLayer(torch.zeros(2, 2, 5, 4)), offloading=True), ATTN, "auto", "no plain per-layer storage"),
    (_cache(DynamicLayer(torch.zeros(2, 2, 5, 4))), SimpleNamespace(), "auto", "layer_idx None"),
    (_cache(DynamicLayer(torch.zeros(2, 2, 5, 4))), SimpleNamespace(layer_idx=7), "auto", "layer_idx 7"),
    (_cache(QuantizedLayer(torch.zeros(2, 2, 5, 4))), ATTN, "auto", "is a QuantizedLayer"),
    (_cache(DynamicLayer(torch.zeros(2, 2, 9, 4))), ATTN, "auto", "are not this call's"),  # stale keys before
    (_cache(DynamicLayer(torch.zeros(2, 4, 5, 4))), ATTN, "auto", "are not this call's"),  # other head layout
    (_cache(DynamicLayer(torch.zeros(2, 2, 5, 4, dtype=torch.bfloat16))), ATTN, "auto", "torch.bfloat16"),
])
def test_lookup_recomputes_unless_the_cache_provably_holds_this_calls_keys(cache, attn, policy, reason):
    found = find_cached_keys(cache, attn, HIDDEN, (2, 4), policy)
    assert found.keys is None and found.source == "recompute" and reason in found.reason


def test_lookup_reads_plain_keys():
    keys = torch.randn(2, 2, 5, 4)
    found = find_cached_keys(_cache(DynamicLayer(keys)), ATTN, HIDDEN, (2, 4), "auto")
    assert found.source == "cache" and found.keys is keys
