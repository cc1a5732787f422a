"""Every registered selector, compiled with ``compile(scorer=NAME)``, through the conformance checks.

Tiny LLaVA, LLaVA-NeXT, InternVL, Gemma 3 and Qwen2.5-VL test models, eager and sdpa each, a batch of three
left-padded prompts and a schedule with three cuts at layers >= 1: per-sample counts ceil(r * N_b), the masking reference, cached ==
uncached generation, batch invariance, and a cut that keeps every token bit-identical to the original model.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import ScheduleError, UnsupportedError
from tokenprune.plugins import register, registry
from tokenprune.scoring.selection import SelectorOutputError
from tokenprune.testing.masking import dropped_per_layer, kept_rows, masked_reference

from ..conformance.cases import greedy, layers_of, load_case
from ..conformance.test_conformance import _single

# Selectors that refuse every bundled test model, with the words their refusal must contain.
REFUSES = {"grid-downsample": "patch grid"}
FAMILIES = ["llava", "llava_next", "internvl", "gemma3", "qwen2_5_vl"]
MODELS = [((family, None), attn) for family in FAMILIES for attn in ("eager", "sdpa")]
ATOL = 1e-4
# Cuts before layers 1, 2 and 3; a ratio just under 1 keeps ceil(r N) = N tokens: cuts that must change nothing.
RATIOS = {"multi": [1.0, 0.75, 0.5, 0.25], "keep-every-token": [1.0, 0.9999, 0.9998, 0.9997]}
WORKING = [name for name in registry("selector").names() if name not in REFUSES]


def _schedule(case, key: str) -> tp.Schedule:
    ratios = RATIOS[key]
    return tp.Schedule((ratios + [ratios[-1]] * case.num_layers)[:case.num_layers])


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch.kwargs).logits


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"{m[0][0]}-{m[1]}")
def setup(request):
    case_key, attn = request.param
    case = load_case(*case_key)
    model = case.models[attn]
    return case, model, case.batch(model, "batch3")


def test_every_selector_is_checked():
    assert WORKING and set(WORKING) | set(REFUSES) == set(registry("selector").names())


@pytest.mark.parametrize("name", WORKING)
def test_selector_conformance(setup, name):
    case, model, batch = setup
    schedule = _schedule(case, "multi")
    compiled = tp.compile(model, case.spec, schedule, scorer=name, self_check="off")
    logits = _logits(compiled, batch)
    selection = tp.last_selection(compiled)
    assert sorted(selection) == list(schedule.cuts) == [1, 2, 3]
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], int(batch.vision_mask[b].sum()))
            assert bool(batch.vision_mask[b, kept].all()), "only vision tokens are pruned"

    # The pruned model equals the unpruned eager model with the dropped tokens masked out.
    eager = case.models["eager"]
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, eager), dropped):
        ref_logits = _logits(eager, batch)
        ref_tokens = greedy(eager, batch, steps=4)
    for _, got, expected in kept_rows(logits, ref_logits, batch.vision_mask, selection,
                                      batch.kwargs["attention_mask"]):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    cached = greedy(compiled, batch, steps=4, use_cache=True)
    assert torch.equal(cached, ref_tokens)
    assert torch.equal(greedy(compiled, batch, steps=4, use_cache=False), cached)

    # Each sample alone keeps the tokens it keeps in the batch.
    _logits(compiled, batch)
    together = tp.last_selection(compiled)
    for b in range(batch.input_ids.shape[0]):
        single = _single(batch, b)
        alone = _logits(compiled, single)
        offset = batch.input_ids.shape[1] - single.input_ids.shape[1]
        for layer, per_sample in tp.last_selection(compiled).items():
            assert torch.equal(per_sample[0] + offset, together[layer][b]), (layer, b)
        torch.testing.assert_close(logits[b, -alone.shape[1]:], alone[0], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", WORKING)
def test_selector_keeping_every_token_is_bit_identical(setup, name):
    case, model, batch = setup
    compiled = tp.compile(model, case.spec, _schedule(case, "keep-every-token"), scorer=name, self_check="off")
    assert torch.equal(_logits(compiled, batch), _logits(model, batch))
    assert len(tp.last_selection(compiled)) == 3  # the cuts ran


@pytest.mark.parametrize("name", sorted(REFUSES))
def test_selector_refuses_clearly(name):
    case = load_case("llava", None)
    model = case.models["sdpa"]
    compiled = tp.compile(model, case.spec, _schedule(case, "multi"), scorer=name, self_check="off")
    with pytest.raises(UnsupportedError, match=REFUSES[name]):
        _logits(compiled, case.batch(model, "batch3"))


def test_a_selector_must_keep_exactly_the_asked_counts():
    @register("selector", "test-keeps-one-too-many")
    def greedy_selector(ctx, counts):
        rank = (ctx.vision & ctx.valid).long().cumsum(dim=1)  # (B, n) 1-based rank among the candidates
        return ctx.vision & ctx.valid & (rank <= counts[:, None] + 1)

    case = load_case("llava", None)
    model = case.models["sdpa"]
    compiled = tp.compile(model, case.spec, _schedule(case, "multi"), scorer="test-keeps-one-too-many",
                          self_check="off")
    with pytest.raises(SelectorOutputError, match="exactly counts"):
        _logits(compiled, case.batch(model, "batch3"))


def test_unknown_names_list_scorers_and_selectors():
    case = load_case("llava", None)
    with pytest.raises(ScheduleError, match=r"unknown scorer 'divprun'.*selectors.*did you mean \['divprune'"):
        tp.compile(case.models["sdpa"], case.spec, _schedule(case, "multi"), scorer="divprun")
