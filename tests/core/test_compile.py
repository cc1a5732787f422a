"""Behaviour of compile() beyond the conformance suite: edge inputs, dtypes, decoding modes, errors."""

import pytest
import torch

import tokenprune as tp
from tests.conformance.cases import greedy, layers_of, load_case
from tokenprune.testing.masking import dropped_per_layer, kept_rows, masked_reference
from tokenprune.errors import ScheduleError, UnsupportedError
from tokenprune.testing import build_test_model, make_test_inputs

SPEC = tp.load_spec("llava")
FASTV = tp.Schedule.fastv(4, layer=2, keep=0.5)


@pytest.fixture(scope="module")
def case():
    return load_case("llava", None)


def _batch(model, images=(1, 2, 1), texts=(5, 9, 3)):
    return make_test_inputs(SPEC, model, list(images), list(texts), seed=3)


def test_prompt_without_vision_tokens_runs_unpruned_and_exact(case):
    model = case.models["sdpa"]
    ids = torch.randint(3, 200, (2, 9))
    compiled = tp.compile(model, SPEC, FASTV)
    with torch.no_grad():
        assert torch.equal(compiled(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tp.last_selection(compiled) == {}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bf16_keep_all_exact_and_pruned_runs(attn):
    model = build_test_model(SPEC, attn_implementation=attn, dtype=torch.bfloat16)
    batch = _batch(model)
    keep_all = tp.compile(model, SPEC, tp.Schedule.keep_all(4))
    with torch.no_grad():
        assert torch.equal(keep_all(**batch.kwargs).logits, model(**batch.kwargs).logits)
    pruned = tp.compile(model, SPEC, FASTV)
    with torch.no_grad():
        logits = pruned(**batch.kwargs).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert greedy(pruned, batch).shape == (3, 8)


def test_inputs_embeds_with_explicit_vision_mask(case):
    model = case.models["sdpa"]
    batch = _batch(model)
    compiled = tp.compile(model, SPEC, FASTV)
    ids, mask = batch.input_ids, batch.kwargs["attention_mask"]
    with torch.no_grad():
        by_ids = compiled(input_ids=ids, attention_mask=mask).logits
        embeds = model.get_input_embeddings()(ids)
        by_embeds = compiled(inputs_embeds=embeds, attention_mask=mask, tokenprune_vision_mask=batch.vision_mask).logits
        assert torch.equal(by_ids, by_embeds)
        with pytest.raises(UnsupportedError, match="called for a prefill without vision-token positions"):
            compiled(inputs_embeds=embeds, attention_mask=mask)


def test_right_padding_is_refused(case):
    model = case.models["sdpa"]
    compiled = tp.compile(model, SPEC, FASTV)
    batch = _batch(model)
    ids, mask = batch.input_ids.flip(1), batch.kwargs["attention_mask"].flip(1)
    with pytest.raises(UnsupportedError, match=r"right-padded batch.*padding_side = 'left'"):
        compiled(input_ids=ids, attention_mask=mask, pixel_values=batch.kwargs["pixel_values"])


def test_vision_tokens_in_a_continuation_chunk_are_refused(case):
    model = case.models["sdpa"]
    compiled = tp.compile(model, SPEC, FASTV)
    batch = _batch(model, images=(1,), texts=(4,))
    with torch.no_grad():
        out = compiled(**batch.kwargs, use_cache=True)
        image_id = batch.image_token_id
        chunk = torch.full((1, 2), image_id)
        mask = torch.ones(1, batch.input_ids.shape[1] + 2, dtype=torch.long)
        with pytest.raises(UnsupportedError, match="vision tokens arrive in a continuation chunk"):
            compiled(input_ids=chunk, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)


def test_cache_from_another_model_is_refused(case):
    model = case.models["sdpa"]
    compiled = tp.compile(model, SPEC, FASTV)
    batch = _batch(model, images=(1,), texts=(4,))
    with torch.no_grad():
        compiled(**batch.kwargs)  # a pruned prefill, so the session has a selection
        foreign = model(**batch.kwargs, use_cache=True).past_key_values  # unpruned cache
        nxt = torch.tensor([[7]])
        mask = torch.ones(1, batch.input_ids.shape[1] + 1, dtype=torch.long)
        with pytest.raises(UnsupportedError, match=r"layer 2's KV cache holds \d+ tokens, the pruned prefill leaves"):
            compiled(input_ids=nxt, attention_mask=mask, past_key_values=foreign, use_cache=True)


@pytest.mark.parametrize("scorer", ["next-layer-attention", "text-mean-attention", "random"])
def test_registered_scorers_match_the_masking_reference(case, scorer):
    model, eager = case.models["sdpa"], case.models["eager"]
    batch = _batch(model)
    schedule = tp.Schedule([1.0, 0.6, 0.3, 0.3])
    compiled = tp.compile(model, SPEC, schedule, scorer=scorer)
    with torch.no_grad():
        logits = compiled(**batch.kwargs).logits
    selection = tp.last_selection(compiled)
    default = tp.compile(model, SPEC, schedule)
    with torch.no_grad():
        default(**batch.kwargs)
    assert any(not torch.equal(a, b) for l in selection for a, b in zip(selection[l], tp.last_selection(default)[l]))
    dropped = dropped_per_layer(batch.vision_mask, selection, 4)
    with masked_reference(layers_of(case, eager), dropped), torch.no_grad():
        ref = eager(**batch.kwargs).logits
    for _, got, expected in kept_rows(logits, ref, batch.vision_mask, selection, batch.kwargs["attention_mask"]):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_random_scorer_is_seeded():
    model = build_test_model(SPEC)
    batch = _batch(model)
    picks = []
    for seed in (0, 0, 1):
        compiled = tp.compile(model, SPEC, FASTV, scorer="random", seed=seed)
        with torch.no_grad():
            compiled(**batch.kwargs)
        picks.append(tp.last_selection(compiled)[2])
    assert all(torch.equal(a, b) for a, b in zip(picks[0], picks[1]))
    assert any(not torch.equal(a, b) for a, b in zip(picks[0], picks[2]))


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_beam_search_and_seeded_sampling_match_the_reference(case, mode):
    model, eager = case.models["sdpa"], case.models["eager"]
    batch = _batch(model)
    compiled = tp.compile(model, SPEC, FASTV)
    kw = {"num_beams": 3} if mode == "beam" else {"do_sample": True, "top_k": 0}
    torch.manual_seed(11)
    got = greedy(compiled, batch, **{k: v for k, v in kw.items() if k != "do_sample"}) if mode == "beam" else None
    if mode == "sample":
        with torch.no_grad():
            got = compiled.generate(**batch.kwargs, max_new_tokens=6, suppress_tokens=batch.suppress_ids,
                                    pad_token_id=0, **kw)
    with torch.no_grad():
        compiled(**batch.kwargs)
    dropped = dropped_per_layer(batch.vision_mask, tp.last_selection(compiled), 4)
    torch.manual_seed(11)
    with masked_reference(layers_of(case, eager), dropped), torch.no_grad():
        if mode == "beam":
            ref = greedy(eager, batch, num_beams=3)
        else:
            ref = eager.generate(**batch.kwargs, max_new_tokens=6, suppress_tokens=batch.suppress_ids,
                                 pad_token_id=0, **kw)
    assert torch.equal(got, ref)


def test_budget_and_scorer_errors(case):
    model = case.models["sdpa"]
    with pytest.raises(ScheduleError, match="no budget given"):
        tp.compile(model, SPEC)
    with pytest.raises(ScheduleError, match=r"unknown scorer 'attn'.*one of \['last-token-attention'"):
        tp.compile(model, SPEC, FASTV, scorer="attn")
    with pytest.raises(ScheduleError, match=r"schedule has 3 entries but the language model has 4 decoder layers"):
        tp.compile(model, SPEC, tp.Schedule([1.0, 0.5, 0.5]))


def test_unsupported_attention_backend_is_refused():
    model = build_test_model(SPEC)
    model.config.text_config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedError, match=r"attention implementation 'flex_attention'.*attn_implementation='sdpa'"):
        tp.compile(model, SPEC, FASTV)


def test_printed_graph_names_the_inserted_nodes(case):
    compiled = tp.compile(case.models["sdpa"], SPEC, tp.Schedule([1.0, 0.5, 0.5, 0.2]))
    code = tp.graph_of(compiled).code
    for name in ("cut1_select", "cut1_hidden", "cut1_attention_mask", "cut1_position_embeddings", "cut3_select"):
        assert name in code
    assert "cut2_select" not in code


def test_teacher_forcing_with_a_prompt_end_selects_like_generation(case):
    """With answers appended in the same call, tokenprune_prompt_end keeps the prompt's selection, so the
    answer logits equal a cached continuation after a prompt-only prefill."""
    model = case.models["sdpa"]
    batch = _batch(model, images=(1, 2), texts=(5, 9))
    compiled = tp.compile(model, SPEC, FASTV)
    ids, mask, pixels = batch.input_ids, batch.kwargs["attention_mask"], batch.kwargs["pixel_values"]
    answers = torch.randint(3, 200, (2, 3))
    full_mask = torch.cat([mask, torch.ones_like(answers)], dim=1)
    with torch.no_grad():
        prefill = compiled(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_cache=True)
        by_prompt = tp.last_selection(compiled)
        continued = compiled(input_ids=answers, attention_mask=full_mask, past_key_values=prefill.past_key_values,
                             use_cache=True).logits
        forced = compiled(input_ids=torch.cat([ids, answers], dim=1), attention_mask=full_mask, pixel_values=pixels,
                          tokenprune_prompt_end=ids.shape[1]).logits
        assert all(torch.equal(a, b) for a, b in zip(by_prompt[2], tp.last_selection(compiled)[2]))
        torch.testing.assert_close(forced[:, -4], prefill.logits[:, -1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(forced[:, -3:], continued, atol=1e-4, rtol=1e-4)
        with pytest.raises(UnsupportedError, match=r"prompt end \[0, 0\]"):
            compiled(input_ids=ids, attention_mask=mask, pixel_values=pixels, tokenprune_prompt_end=0)
