"""Every registered selector, compiled with ``compile(scorer=NAME)``, through the conformance checks.

Tiny LLaVA, LLaVA-NeXT, InternVL, Gemma 3 and Qwen2.5-VL test models, eager and sdpa each, a batch of three
left-padded prompts and a schedule with three cuts at layers >= 1 (one cut for the grid selectors, which need
whole grids): per-sample counts ceil(r * N_b), the masking reference, cached == uncached generation, batch
invariance, and a cut that keeps every token bit-identical to the original model.
"""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.errors import ScheduleError, UnsupportedError
from tokenprune.plugins import register, registry
from tokenprune.scoring import scorers
from tokenprune.scoring.selection import SelectorOutputError

from ..conformance.cases import load_case
from .conformance_checks import case_fixture, check_selector_call, logits_of

# grid-downsample and grid-pool need whole grids: they cut once, at the schedule's first cut, and refuse a later
# cut with these words.
FIRST_CUT_ONLY = ("grid-downsample", "grid-pool")  # they need every vision token: one cut per schedule
FAMILIES = ["llava", "llava_next", "internvl", "gemma3", "qwen2_5_vl"]
MODELS = [((family, None), attn) for family in FAMILIES for attn in ("eager", "sdpa")]
# Cuts before layers 1, 2 and 3; a ratio just under 1 keeps ceil(r N) = N tokens: cuts that must change nothing.
RATIOS = {"multi": [1.0, 0.75, 0.5, 0.25], "first-cut": [1.0, 0.3],
          "keep-every-token": [1.0, 0.9999, 0.9998, 0.9997], "keep-every-token-first-cut": [1.0, 0.9999]}
WORKING = registry("selector").names()


def _schedule(case, key: str) -> tp.Schedule:
    ratios = RATIOS[key]
    return tp.Schedule((ratios + [ratios[-1]] * case.num_layers)[:case.num_layers])


_logits = logits_of
setup = case_fixture(MODELS)


def test_every_first_cut_only_selector_is_registered():
    assert set(FIRST_CUT_ONLY) <= set(WORKING)


def _compile(case, model, schedule, name):
    """``compile(scorer=name)``; None after checking the refusal when the selector reads a vision tower the
    spec does not describe (no ``vision_side`` section)."""
    if getattr(registry("selector").get(name), "needs_vision_side", False) and case.spec.vision_side is None:
        with pytest.raises(UnsupportedError, match="vision_side"):
            tp.compile(model, case.spec, schedule, scorer=name, self_check="off")
        return None
    return tp.compile(model, case.spec, schedule, scorer=name, self_check="off")


@pytest.mark.parametrize("name", WORKING)
def test_selector_conformance(setup, name):
    case, model, batch = setup
    schedule = _schedule(case, "first-cut" if name in FIRST_CUT_ONLY else "multi")
    compiled = _compile(case, model, schedule, name)
    if compiled is None:
        return
    selection = check_selector_call(case, batch, compiled)
    assert sorted(selection) == list(schedule.cuts) == ([1] if name in FIRST_CUT_ONLY else [1, 2, 3])
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], int(batch.vision_mask[b].sum()))
            assert bool(batch.vision_mask[b, kept].all()), "only vision tokens are pruned"


@pytest.mark.parametrize("name", WORKING)
def test_selector_keeping_every_token_is_bit_identical(setup, name):
    case, model, batch = setup
    schedule = _schedule(case, "keep-every-token-first-cut" if name in FIRST_CUT_ONLY else "keep-every-token")
    compiled = _compile(case, model, schedule, name)
    if compiled is None:
        return
    assert torch.equal(_logits(compiled, batch), _logits(model, batch))
    assert len(tp.last_selection(compiled)) == len(schedule.cuts)  # the cuts ran


@pytest.mark.parametrize("name", FIRST_CUT_ONLY)
def test_selector_refuses_a_later_cut_clearly(name):
    case = load_case("llava", None)
    with pytest.raises(UnsupportedError, match=r"at 3 cuts \(before layers \[1, 2, 3\]\).*expected one cut.*whole patch grid"):
        tp.compile(case.models["sdpa"], case.spec, _schedule(case, "multi"), scorer=name, self_check="off")
    assert scorers.first_cut_only(name) and not scorers.first_cut_only("divprune")


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
