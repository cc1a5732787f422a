"""Cuts that merge as well as drop (a selector answering with a CutMerge), through the conformance checks.

Tiny LLaVA (eager and sdpa) and Qwen2.5-VL (sdpa), a batch of three left-padded prompts, cuts before layers 1, 2
and 3. Two merging selectors: one registered here (every token not kept goes into its most similar survivor) and
``tome``. The reference is the unpruned eager model whose hooks replace each survivor's hidden state entering the
cut by the weighted mean of what it absorbs and mask the rest out (``tokenprune.testing.masking``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenprune as tp
from tokenprune.plugins import registry
from tokenprune.plugins.contracts import CutMerge
from tokenprune.scoring.selection import SelectorOutputError, ranking_selector
from tokenprune.testing.masking import dropped_per_layer, kept_rows, masked_reference

from ..conformance.cases import greedy, layers_of, load_case
from ..conformance.test_conformance import _single
from .conformance_checks import case_fixture, logits_of

MODELS = [(("llava", None), "eager"), (("llava", None), "sdpa"), (("qwen2_5_vl", None), "sdpa")]
ATOL = 1e-4
RATIOS = {"multi": [1.0, 0.75, 0.5, 0.25], "keep-every-token": [1.0, 0.9999, 0.9998, 0.9997]}
RECORDED: dict[int, dict[str, torch.Tensor]] = {}  # per cut: what the nearest-survivor selector saw and answered

_by_norm = ranking_selector(lambda ctx: ctx.entering_states().float().norm(dim=-1))  # survivors of the test selectors


def merge_into_nearest(ctx, counts):
    """Keep the largest hidden states; merge every other still-kept vision token into its most similar survivor."""
    keep = _by_norm(ctx, counts)  # (B, n)
    unit = F.normalize(ctx.entering_states().float(), dim=-1)  # (B, n, D)
    similarity = (unit @ unit.transpose(1, 2)).masked_fill(~keep[:, None, :], float("-inf"))  # (B, n, n)
    slots = torch.arange(keep.shape[1]).expand_as(keep)
    absorbed = ctx.vision & ctx.valid & (counts[:, None] > 0)
    owner = torch.where(keep, slots, torch.where(absorbed, similarity.argmax(dim=2), -1))
    RECORDED[ctx.layer] = {"owner": owner, "sizes": ctx.sizes.clone(), "positions": ctx.positions.clone(),
                           "candidates": ctx.vision & ctx.valid}
    return CutMerge(owner, ctx.sizes)


def merge_into_self(ctx, counts):
    keep = _by_norm(ctx, counts)
    return CutMerge(torch.where(keep, torch.arange(keep.shape[1]).expand_as(keep), -1))


def bad_merge(mode: str):
    def select(ctx, counts):
        keep = _by_norm(ctx, counts)
        slots = torch.arange(keep.shape[1]).expand_as(keep)
        owner = torch.where(keep, slots, -1)
        dropped = ctx.vision & ctx.valid & ~keep
        first_dropped = dropped.long().argmax(dim=1, keepdim=True)  # (B, 1)
        text = (~ctx.vision & ctx.valid).long().argmax(dim=1, keepdim=True)
        if mode == "into-dropped":  # the first dropped token stays dropped; the others point at it
            owner = torch.where(dropped & (slots != first_dropped), first_dropped, owner)
        elif mode == "into-text":
            owner = torch.where(dropped, text, owner)
        elif mode == "survivors":
            owner = torch.where(ctx.vision & ctx.valid, slots, -1)
        elif mode == "float":
            owner = owner.float()
        return CutMerge(owner, -ctx.sizes if mode == "sizes" else None)
    return select


BAD = {"into-dropped": "not a surviving", "into-text": "not a surviving", "survivors": "exactly counts",
       "float": "long tensor", "sizes": "sizes hold"}
TEST_SELECTORS = {"test-merge-nearest": merge_into_nearest, "test-merge-self": merge_into_self,
                  "test-drop-by-norm": _by_norm, **{f"test-bad-merge-{m}": bad_merge(m) for m in BAD}}


@pytest.fixture(scope="module", autouse=True)
def test_selectors():
    """Registered for this module only (the contract test checks every permanently registered selector)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, select in TEST_SELECTORS.items():
            patch.setitem(registry("selector")._entries, name, select)
        yield


def _schedule(case, key: str) -> tp.Schedule:
    ratios = RATIOS[key]
    return tp.Schedule((ratios + [ratios[-1]] * case.num_layers)[:case.num_layers])


_logits = logits_of
setup = case_fixture(MODELS)


@pytest.mark.parametrize("name", ["test-merge-nearest", "tome"])
def test_merging_cuts_match_the_merging_reference(setup, name):
    case, model, batch = setup
    schedule = _schedule(case, "multi")
    compiled = tp.compile(model, case.spec, schedule, scorer=name, self_check="off")
    logits = _logits(compiled, batch)
    selection, merges = tp.last_selection(compiled), tp.last_merges(compiled)
    assert sorted(selection) == sorted(merges) == [1, 2, 3]  # every cut merged something
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], int(batch.vision_mask[b].sum()))
            merged_rows = merges[layer][b].sum(dim=1).nonzero().flatten()
            assert set(merged_rows.tolist()) <= set(kept.tolist()), "only kept vision tokens absorb others"

    eager = case.models["eager"]
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, eager), dropped, merges):
        ref_logits = _logits(eager, batch)
        ref_tokens = greedy(eager, batch, steps=4)
    with masked_reference(layers_of(case, eager), dropped):
        dropping_only = _logits(eager, batch)
    mask = batch.kwargs["attention_mask"]
    for (_, got, expected), (_, _, dropped_ref) in zip(
            kept_rows(logits, ref_logits, batch.vision_mask, selection, mask),
            kept_rows(logits, dropping_only, batch.vision_mask, selection, mask)):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
        assert not torch.allclose(got, dropped_ref, atol=1e-2), "the merge changed nothing: the test cannot fail"
    cached = greedy(compiled, batch, steps=4, use_cache=True)
    assert torch.equal(cached, ref_tokens)
    assert torch.equal(greedy(compiled, batch, steps=4, use_cache=False), cached)

    # Each sample alone keeps and merges what it does in the batch.
    _logits(compiled, batch)
    together = tp.last_selection(compiled), tp.last_merges(compiled)
    for b in range(batch.input_ids.shape[0]):
        single = _single(batch, b)
        alone = _logits(compiled, single)
        offset = batch.input_ids.shape[1] - single.input_ids.shape[1]
        for layer, per_sample in tp.last_selection(compiled).items():
            assert torch.equal(per_sample[0] + offset, together[0][layer][b]), (layer, b)
            torch.testing.assert_close(tp.last_merges(compiled)[layer][0],
                                       together[1][layer][b, offset:, offset:], atol=1e-6, rtol=0)
        torch.testing.assert_close(logits[b, -alone.shape[1]:], alone[0], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", ["test-merge-nearest", "tome"])
def test_merging_selector_keeping_every_token_is_bit_identical(setup, name):
    case, model, batch = setup
    compiled = tp.compile(model, case.spec, _schedule(case, "keep-every-token"), scorer=name, self_check="off")
    assert torch.equal(_logits(compiled, batch), _logits(model, batch))
    assert len(tp.last_selection(compiled)) == 3 and tp.last_merges(compiled) == {}


def test_a_merge_where_every_token_owns_itself_is_the_drop(setup):
    case, model, batch = setup
    schedule = _schedule(case, "multi")
    merging = tp.compile(model, case.spec, schedule, scorer="test-merge-self", self_check="off")
    dropping = tp.compile(model, case.spec, schedule, scorer="test-drop-by-norm", self_check="off")
    assert torch.equal(_logits(merging, batch), _logits(dropping, batch))
    assert tp.last_merges(merging) == {}


def _independent_weights(record: dict[str, torch.Tensor], prompt_len: int) -> torch.Tensor:
    """(B, P, P) merge weights from what the selector answered: each survivor's row holds the sizes of the
    tokens it owns (itself included) over their prompt positions, normalised; rows that absorbed nothing are 0."""
    owner, sizes, positions = record["owner"], record["sizes"], record["positions"]
    out = torch.zeros(owner.shape[0], prompt_len, prompt_len)
    for b in range(owner.shape[0]):
        for slot in range(owner.shape[1]):
            if record["candidates"][b, slot] and owner[b, slot] >= 0:
                out[b, positions[b, owner[b, slot]], positions[b, slot]] += sizes[b, slot]
    absorbing = (out > 0).sum(dim=2) > 1  # (B, P)
    return torch.where(absorbing[:, :, None], out / out.sum(dim=2, keepdim=True).clamp_min(1e-30), 0.0)


def test_merge_weights_and_sizes_follow_the_selector():
    case = load_case("llava", None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, _schedule(case, "multi"), scorer="test-merge-nearest", self_check="off")
    _logits(compiled, batch)
    merges = tp.last_merges(compiled)
    vision_tokens = batch.vision_mask.sum(dim=1).float()  # (B,)
    for layer in (1, 2, 3):
        record = RECORDED[layer]
        torch.testing.assert_close(merges[layer], _independent_weights(record, batch.input_ids.shape[1]))
        # Nothing is dropped, so the still-kept tokens always stand for all of the sample's vision tokens.
        carried = (record["sizes"] * record["candidates"]).sum(dim=1)
        torch.testing.assert_close(carried, vision_tokens)
        assert bool((record["sizes"][record["candidates"]] > 1).any()) == (layer > 1)


@pytest.mark.parametrize("mode", sorted(BAD))
def test_a_bad_cut_merge_is_refused_clearly(mode):
    case = load_case("llava", None)
    model = case.models["sdpa"]
    compiled = tp.compile(model, case.spec, _schedule(case, "multi"), scorer=f"test-bad-merge-{mode}",
                          self_check="off")
    with pytest.raises(SelectorOutputError, match=BAD[mode]):
        _logits(compiled, case.batch(model, "batch3"))


def test_output_hidden_states_hold_the_merged_tokens():
    case = load_case("llava", None)
    model = case.models["eager"]
    batch = case.batch(model, "batch1")
    compiled = tp.compile(model, case.spec, _schedule(case, "multi"), scorer="tome", self_check="off")
    with torch.no_grad():
        out = compiled(**batch.kwargs, output_hidden_states=True)
    selection, merges = tp.last_selection(compiled), tp.last_merges(compiled)
    dropped = dropped_per_layer(batch.vision_mask, selection, case.num_layers)
    with masked_reference(layers_of(case, model), dropped, merges), torch.no_grad():
        ref = model(**batch.kwargs, output_hidden_states=True)
    for cut in (1, 2, 3):
        recorded = ref.hidden_states[cut][0]  # (P, D) layer cut-1's output; the cut's merge comes after it
        received = torch.where(merges[cut][0].sum(dim=1, keepdim=True) > 0, merges[cut][0] @ recorded, recorded)
        kept = next(kept_rows(out.hidden_states[cut], received[None], batch.vision_mask,
                              {c: s for c, s in selection.items() if c <= cut}))
        torch.testing.assert_close(kept[1], kept[2], atol=1e-5, rtol=1e-4)
