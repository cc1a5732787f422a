"""The vision-encoder selectors (fastervlm, grid-downsample, visionzip, grid-pool) against references computed here
from the vision tower's own eager attention weights, on tiny LLaVA (a [CLS] tower), Qwen2.5-VL (no [CLS], 2x2
merger, window-ordered tower, an image and a video in one batch) and Gemma 3 (no [CLS], a projector that
average-pools the patch grid) test models, batched and left-padded.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from pydantic import ValidationError

import tokenprune as tp
from tokenprune import selectors
from tokenprune.errors import UnsupportedError
from tokenprune.plugins import registry
from tokenprune.plugins.contracts import CutMerge
from tokenprune.rewrite import session_of
from tokenprune.spec_vision import VisionSide

from ..conformance.cases import load_case
from .conformance_checks import check_selector_call, logits_of
from .helpers import split_shares
from .tower_references import pixel_shuffle_reference, reference_at_prompt

CASES = ["llava", "qwen2_5_vl", "gemma3"]
# LLaVA-NeXT's images are a base grid and a crop grid with newline tokens: its grid selectors are checked in
# test_grid_anyres.py, the scoring selectors here.
SCORED_CASES = [*CASES, "llava_next"]


def _schedule(case, ratios) -> tp.Schedule:
    return tp.Schedule((ratios + [ratios[-1]] * case.num_layers)[:case.num_layers])


def _setup(name):
    case = load_case(name, None)
    model = case.models["sdpa"]
    return case, model, case.batch(model, "batch3")


def _top(scores_row: torch.Tensor, positions: torch.Tensor, k: int) -> list[int]:
    """The k positions with the highest score (ties: earlier position), ascending."""
    order = sorted(positions.tolist(), key=lambda p: (-float(scores_row[p]), p))
    return sorted(order[:k])


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", SCORED_CASES)
def test_captured_tower_attention_matches_the_eager_weights(name, monkeypatch):
    case, model, batch = _setup(name)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5]), scorer="fastervlm", self_check="off")
    logits_of(compiled, batch)
    maps = session_of(compiled).thread.vision_capture.maps
    reference, grids, counts = reference_at_prompt(case, batch, monkeypatch)
    vision = batch.vision_mask
    torch.testing.assert_close(maps.attention[vision], reference[vision], atol=1e-6, rtol=1e-4)
    assert maps.grids == grids and maps.counts == counts


@pytest.mark.parametrize("name", SCORED_CASES)
def test_fastervlm_keeps_the_tokens_cls_attends_most_at_every_cut(name, monkeypatch):
    case, model, batch = _setup(name)
    schedule = _schedule(case, [1.0, 0.75, 0.5, 0.25])
    compiled = tp.compile(model, case.spec, schedule, scorer="fastervlm", self_check="off")
    logits_of(compiled, batch)
    reference, _, _ = reference_at_prompt(case, batch, monkeypatch)
    selection = tp.last_selection(compiled)
    assert sorted(selection) == [1, 2, 3]
    for layer, per_sample in selection.items():  # nested top-k of one score: each cut keeps the global top k
        for b, kept in enumerate(per_sample):
            vision = batch.vision_mask[b].nonzero()[:, 0]
            k = tp.keep_count(schedule.keep_ratio[layer], len(vision))
            assert kept.tolist() == _top(reference[b], vision, k), (layer, b)


def _grid_reference(case, batch, monkeypatch, ratio: float, owners: bool = False):
    """Per sample: the kept positions of grid downsampling of each image (and, with ``owners``, the position
    each vision position merges into under grid pooling around them: its nearest kept point)."""
    _, grids, counts = reference_at_prompt(case, batch, monkeypatch)
    image_of_token = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    flat = batch.vision_mask.reshape(-1).nonzero()[:, 0]  # vision positions in fill order (images, then videos)
    if case.spec.name == "qwen2_5_vl":  # images fill first, then videos: order the positions the same way
        ids = batch.input_ids.reshape(-1)[flat]
        flat = torch.cat([flat[ids == case.models["eager"].config.image_token_id],
                          flat[ids == case.models["eager"].config.video_token_id]])
    width = batch.input_ids.shape[1]
    kept, owner = {}, {}
    for b in range(batch.input_ids.shape[0]):
        mine = [int(g) for g in image_of_token[(flat // width) == b].unique()]
        k = tp.keep_count(ratio, int(batch.vision_mask[b].sum()))
        for g, share in zip(mine, split_shares(k, [counts[g] for g in mine])):
            positions = (flat[image_of_token == g] % width).tolist()
            rows, cols = grids[g]
            valid = torch.ones(1, rows * cols, dtype=torch.bool)
            chosen = selectors.grid_downsample(valid, torch.tensor([share]), torch.tensor([[rows, cols]]))
            points = chosen.indices[0][chosen.mask[0]].tolist()
            kept.setdefault(b, []).extend(positions[p] for p in points)
            for j in range(rows * cols):
                near = min(points, key=lambda p: ((p // cols - j // cols) ** 2 + (p % cols - j % cols) ** 2, p))
                owner[(b, positions[j])] = positions[near]
    return {b: sorted(v) for b, v in kept.items()}, owner


@pytest.mark.parametrize("name", CASES)
def test_grid_downsample_keeps_each_images_even_subgrid(name, monkeypatch):
    case, model, batch = _setup(name)
    schedule = _schedule(case, [1.0, 0.3])
    compiled = tp.compile(model, case.spec, schedule, scorer="grid-downsample", self_check="off")
    selection = check_selector_call(case, batch, compiled)
    expected, _ = _grid_reference(case, batch, monkeypatch, 0.3)
    assert {b: kept.tolist() for b, kept in enumerate(selection[1])} == expected


def test_grid_downsample_refuses_a_schedule_with_a_cut_without_whole_grids():
    case, model, _ = _setup("llava")
    with pytest.raises(UnsupportedError, match=r"at 2 cuts.*expected one cut.*whole patch grid"):
        tp.compile(model, case.spec, _schedule(case, [1.0, 0.75, 0.5]), scorer="grid-downsample", self_check="off")


def test_a_spec_without_a_vision_side_is_refused_at_compile():
    case, model, _ = _setup("llava")
    spec = case.spec.model_copy(update={"vision_side": None})
    with pytest.raises(UnsupportedError, match=r"selector 'fastervlm' reads the vision tower.*spec 'llava': vision_side"):
        tp.compile(model, spec, _schedule(case, [1.0, 0.5]), scorer="fastervlm", self_check="off")


def test_the_input_model_keeps_its_tower_untouched():
    case, model, batch = _setup("llava")
    tower = model.model.vision_tower
    hooks = [dict(m._forward_pre_hooks) for m in tower.modules()]
    before = logits_of(model, batch)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5]), scorer="fastervlm", self_check="off")
    logits_of(compiled, batch)
    assert model.model.vision_tower is tower and compiled.model.vision_tower is not tower
    assert [dict(m._forward_pre_hooks) for m in tower.modules()] == hooks
    assert torch.equal(logits_of(model, batch), before)


# ------------------------------------------------------------------------------ merging selectors' answers
def _recording(monkeypatch, name: str, seen: list):
    """Replace the registered merging selector by one that records its CutMerge and keeps its survivors as a plain
    drop, so the test compares the raw answer with the definition."""
    real = registry("selector").get(name)

    def record(ctx, counts):
        answer = real(ctx, counts)
        seen.append((ctx.layer, ctx.positions.clone(), (ctx.vision & ctx.valid).clone(),
                     ctx.entering_states().detach().clone(), counts.clone(), answer))
        slots = torch.arange(ctx.vision.shape[1], device=ctx.vision.device)
        return answer.owner == slots if isinstance(answer, CutMerge) else answer

    record.needs_vision_side = True
    monkeypatch.setitem(registry("selector")._entries, name, record)


@pytest.mark.parametrize("name", SCORED_CASES)
def test_visionzip_merges_as_the_paper_defines(name, monkeypatch):
    case, model, batch = _setup(name)
    seen = []
    _recording(monkeypatch, "visionzip", seen)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5, 0.25]), scorer="visionzip", self_check="off")
    logits_of(compiled, batch)
    reference, _, _ = reference_at_prompt(case, batch, monkeypatch)
    assert [layer for layer, *_ in seen] == [1, 2]
    for layer, positions, candidates, states, counts, answer in seen:
        assert isinstance(answer, CutMerge)
        for b in range(positions.shape[0]):
            slots = candidates[b].nonzero()[:, 0].tolist()
            k = int(counts[b])
            contextual = math.floor(k * 10 / 64 + 0.5)
            score = {s: float(reference[b, positions[b, s]]) for s in slots}
            dominant = sorted(sorted(slots, key=lambda s: (-score[s], s))[:k - contextual])
            rest = [s for s in slots if s not in dominant]
            step = max(1, len(rest) // max(contextual, 1))
            targets = [s for i, s in enumerate(rest) if i % step == 0][:contextual]
            unit = torch.nn.functional.normalize(states[b].double(), dim=-1)
            expected = {s: s for s in dominant + targets}
            for s in rest:
                if s not in targets and targets:
                    expected[s] = max(targets, key=lambda t: (float(unit[s] @ unit[t]), -t))
            got = {s: int(answer.owner[b, s]) for s in slots if int(answer.owner[b, s]) >= 0}
            assert got == expected, (layer, b)
            assert sum(1 for s, o in got.items() if s == o) == k


@pytest.mark.parametrize("name", CASES)
def test_grid_pool_merges_each_token_into_its_nearest_kept_point(name, monkeypatch):
    case, model, batch = _setup(name)
    seen = []
    _recording(monkeypatch, "grid-pool", seen)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.3]), scorer="grid-pool", self_check="off")
    logits_of(compiled, batch)
    kept, owner = _grid_reference(case, batch, monkeypatch, 0.3, owners=True)
    (_, positions, candidates, _, _, answer), = seen
    assert tp.last_selection(compiled)[1] and isinstance(answer, CutMerge)
    for b in range(positions.shape[0]):
        got = {int(positions[b, s]): int(positions[b, answer.owner[b, s]]) for s in candidates[b].nonzero()[:, 0]}
        assert got == {p: o for (sample, p), o in owner.items() if sample == b}
        assert sorted(p for p, o in got.items() if p == o) == kept[b]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("selector", ["visionzip", "grid-pool"])
def test_merging_vision_selectors_match_the_merging_reference(name, selector):
    case, model, batch = _setup(name)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.3]), scorer=selector, self_check="off")
    check_selector_call(case, batch, compiled)
    assert tp.last_merges(compiled), "the cut merged tokens"


@pytest.mark.parametrize("name", ["fastervlm", "grid-downsample", "visionzip", "grid-pool"])
def test_compile_self_check_passes_without_images(name):
    """The self-check's pruning probe marks text tokens as vision tokens and runs no tower: it must still prune."""
    case, model, batch = _setup("llava")
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5]), scorer=name)
    assert session_of(compiled).thread.vision_capture is None  # the probe's record is not left behind
    logits_of(compiled, batch)
    assert len(tp.last_selection(compiled)[1][1]) == tp.keep_count(0.5, int(batch.vision_mask[1].sum()))


@pytest.mark.parametrize("name", ["internvl", "idefics3"])
def test_pixel_shuffle_families_map_patches_as_the_model_does(name):
    case = load_case(name, None)
    model = case.models["sdpa"]
    batch = case.batch(model, "batch3")
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5]), scorer="fastervlm", self_check="off")
    logits_of(compiled, batch)
    maps = session_of(compiled).thread.vision_capture.maps
    torch.testing.assert_close(maps.attention[batch.vision_mask], pixel_shuffle_reference(case, batch),
                               atol=1e-6, rtol=1e-4)


def test_pooled_tokens_excludes_an_explicit_merge():
    with pytest.raises(ValidationError, match="pooled_tokens fixes the merge"):
        VisionSide(tower="t", encoder_layers="layers", pooled_tokens="mm_tokens_per_image", merge=2)


def test_a_pool_that_does_not_divide_the_patch_grid_is_refused(monkeypatch):
    case, model, batch = _setup("gemma3")
    # 3 x 3 from the test tower's 8 x 8 patches: not whole blocks (the model's own pool was built for 4 x 4)
    monkeypatch.setattr(model.config, "mm_tokens_per_image", 9)
    compiled = tp.compile(model, case.spec, _schedule(case, [1.0, 0.5]), scorer="fastervlm", self_check="off")
    with pytest.raises(UnsupportedError, match=r"8 x 8 patch grid pooled to 9 tokens.*vision_side.pooled_tokens"):
        logits_of(compiled, batch)


# ------------------------------------------------------------------ the conformance checks on more families
@functools.cache
def _case(name: str):
    return load_case(name, None)


# The ranking selectors at three cuts (later cuts see earlier cuts' survivors); the grid selectors at the one cut
# they serve (whole grids).
CONTRACT_RATIOS = {"fastervlm": [1.0, 0.75, 0.5, 0.25], "visionzip": [1.0, 0.75, 0.5, 0.25],
                   "grid-downsample": [1.0, 0.3], "grid-pool": [1.0, 0.3]}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(("selector", "name"), [
    *((selector, name) for selector in sorted(CONTRACT_RATIOS) for name in ("internvl", "gemma3")),
    ("fastervlm", "llava_next"), ("visionzip", "llava_next")])
def test_vision_selectors_pass_the_conformance_checks(selector, name, attn):
    case = _case(name)
    model = case.models[attn]
    batch = case.batch(model, "batch3")
    schedule = _schedule(case, CONTRACT_RATIOS[selector])
    compiled = tp.compile(model, case.spec, schedule, scorer=selector, self_check="off")
    selection = check_selector_call(case, batch, compiled)
    assert sorted(selection) == list(range(1, len(CONTRACT_RATIOS[selector])))
    for layer, per_sample in selection.items():
        for b, kept in enumerate(per_sample):
            assert len(kept) == tp.keep_count(schedule.keep_ratio[layer], int(batch.vision_mask[b].sum()))
            assert bool(batch.vision_mask[b, kept].all()), "only vision tokens are pruned"

