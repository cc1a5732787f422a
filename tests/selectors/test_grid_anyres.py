"""Grid downsampling and pooling on LLaVA-NeXT's any-res layout (a base grid, then the unpadded crop grid with a
newline token ending each row) against references written here: the marked-grid tensor functions on padded
batches, and grid-downsample / grid-pool compiled on the tiny LLaVA-NeXT model, whose images' layouts are read
from the model's own ``pack_image_features``."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

import tokenprune as tp
from tokenprune.errors import UnsupportedError
from tokenprune.plugins import registry
from tokenprune.rewrite import session_of
from tokenprune.scoring.tower_attention import ImageScores, TiledGrid
from tokenprune.selectors import SelectorInputError, marked_grid_downsample, marked_grid_pool_around

from ..conformance.cases import load_case
from .conformance_checks import check_selector_call, logits_of
from .helpers import assert_batch_invariant, assert_keep_all, assert_valid_selection, kept_positions, padded_batch
from .helpers import split_shares, tokens_of
from .test_grid import reference_downsample

MARKED = [(3, 4), (1, 5), (4, 1), (5, 2), (2, 3)]  # (rows, columns) of patches; a marker ends each row


# ------------------------------------------------------------------------------------------------ references
def _keepable(rows: int, cols: int) -> set[int]:
    """Every count a marked grid can keep: r rows, each its marker and 1..cols patches."""
    return {0} | {r + p for r in range(1, rows + 1) for p in range(r, r * cols + 1)}


def reference_marked(rows: int, cols: int, k: int) -> tuple[list[int], list[int]]:
    """(kept patches, kept markers) as token indices of a marked grid (a row is cols patches then its marker)."""
    if k == 0:
        return [], []
    spacing = math.floor((math.sqrt(rows * rows + 4 * k * rows * cols) - rows) / (2 * cols) + 0.5)
    used = max(min(spacing, rows, k // 2), math.ceil(k / (cols + 1)))
    patches = k - used
    sub_cols = min(cols, math.ceil(patches / used))
    centres = [((2 * i + 1) * rows // (2 * used), (2 * j + 1) * cols // (2 * sub_cols))
               for i in range(used) for j in range(sub_cols)]
    chosen = [centres[t * len(centres) // patches] for t in range(patches)]
    marker_rows = [(2 * i + 1) * rows // (2 * used) for i in range(used)]
    assert sorted({r for r, _ in chosen}) == marker_rows, "every kept row holds a kept patch"
    return [r * (cols + 1) + c for r, c in chosen], [r * (cols + 1) + cols for r in marker_rows]


def reference_anyres(layout: TiledGrid, k: int) -> list[int]:
    """Token indices an any-res image keeps: the share of its crop grid is k N_tiles / N rounded half up, moved by
    one to a count the crop grid can keep (down while the base grid has room); the base grid downsampled as a
    plain grid, the crop grid as a marked one."""
    (side_h, side_w), (rows, cols) = layout.base, layout.tiles
    base = side_h * side_w
    tiles = rows * (cols + 1)
    share = math.floor(Fraction(k * tiles, base + tiles) + Fraction(1, 2))
    if share not in _keepable(rows, cols):
        share += -1 if k - (share - 1) <= base else 1
    patches, markers = reference_marked(rows, cols, share)
    return sorted(reference_downsample(side_h, side_w, k - share) + [base + i for i in patches + markers])


def anyres_layouts(model, image_sizes: torch.Tensor) -> list[TiledGrid]:
    """Each image's layout as the model's own ``pack_image_features`` lays out patches (ones) and newlines (0)."""
    config = model.config
    side = config.vision_config.image_size // config.vision_config.patch_size
    crops = [image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
             for size in image_sizes.tolist()]
    features = [torch.ones(n, side * side, 1) for n in crops]
    packed, _ = model.model.pack_image_features(features, image_sizes, config.vision_feature_select_strategy,
                                                image_newline=torch.zeros(1))
    layouts = []
    for tokens in packed:
        is_patch = tokens[side * side:, 0] == 1  # the crop grid and its newlines
        rows = int((~is_patch).sum())
        cols = int((~is_patch).nonzero()[0, 0])
        assert is_patch.reshape(rows, cols + 1)[:, :cols].all() and not is_patch.reshape(rows, cols + 1)[:, -1].any()
        layouts.append(TiledGrid((side, side), (rows, cols)))
    return layouts


def _image_positions(batch, layouts: list[TiledGrid]) -> list[list[list[int]]]:
    """Per sample, per image: the prompt positions of its tokens (images fill the vision positions in order)."""
    flat = batch.vision_mask.reshape(-1).nonzero()[:, 0].split([sum(layout.counts()) for layout in layouts])
    width = batch.input_ids.shape[1]
    images = [[] for _ in range(batch.input_ids.shape[0])]
    for positions in flat:
        images[int(positions[0]) // width].append((positions % width).tolist())
    return images


def _expected_anyres(case, batch, ratio: float):
    """(layouts, per sample the kept prompt positions, per sample and image its positions and kept indices)."""
    layouts = anyres_layouts(case.models["eager"], batch.kwargs["image_sizes"])
    images = _image_positions(batch, layouts)
    kept, per_image, g = {}, [], 0
    for b, positions in enumerate(images):
        k = tp.keep_count(ratio, int(batch.vision_mask[b].sum()))
        mine = layouts[g:g + len(positions)]
        g += len(positions)
        chosen = [reference_anyres(layout, share)
                  for layout, share in zip(mine, split_shares(k, [sum(layout.counts()) for layout in mine]))]
        kept[b] = sorted(p[i] for p, c in zip(positions, chosen) for i in c)
        per_image.append(list(zip(mine, positions, chosen)))
    return layouts, kept, per_image


# ----------------------------------------------------------------------------------- the marked tensor functions
def _marked_batch(seed: int, scattered: bool):
    x, valid = padded_batch(seed, [h * (w + 1) for h, w in MARKED], dim=5, scattered=scattered)
    return x, valid, torch.tensor(MARKED)


@pytest.mark.parametrize("scattered", [False, True])
def test_marked_downsample_matches_the_reference_at_every_keepable_count(scattered):
    _, valid, grid = _marked_batch(0, scattered)
    largest = max(h * (w + 1) for h, w in MARKED)
    for step in range(largest + 1):  # sample b keeps its step-th keepable count (its largest past the end)
        k = torch.tensor([sorted(_keepable(h, w))[min(step, len(_keepable(h, w)) - 1)] for h, w in MARKED])
        selection = marked_grid_downsample(valid, k, grid)
        assert_valid_selection(selection, valid, k)
        for b, (h, w) in enumerate(MARKED):
            patches, markers = reference_marked(h, w, int(k[b]))
            assert kept_positions(selection, valid, b) == sorted(patches + markers), (b, int(k[b]))


def test_marked_downsample_keep_all_and_batch_invariance():
    x, valid, grid = _marked_batch(1, scattered=True)
    assert_keep_all(lambda x, v, k: marked_grid_downsample(v, k, grid), x, valid)
    k = torch.tensor([6, 4, 4, 7, 5])
    assert_batch_invariant(lambda x, v, k, g: marked_grid_downsample(v, k, g), x, valid, k, samplewise=(grid,))


def test_marked_downsample_refuses_a_count_no_rows_can_hold():
    _, valid, grid = _marked_batch(0, scattered=False)
    with pytest.raises(SelectorInputError, match=r"sample 2 is asked to keep 3 tokens of its \[4, 1\] marked grid"):
        marked_grid_downsample(valid, torch.tensor([2, 2, 3, 2, 2]), grid)
    with pytest.raises(SelectorInputError, match=r"rows \* \(columns \+ 1\) = N_b"):
        marked_grid_downsample(valid, torch.tensor([2, 2, 2, 2, 2]), grid.flip(0))


@pytest.mark.parametrize("scattered", [False, True])
def test_marked_pool_merges_patches_and_markers_apart(scattered):
    x, valid, grid = _marked_batch(3, scattered)
    k = torch.tensor([7, 4, 4, 6, 5])
    merged = marked_grid_pool_around(x, valid, k, grid)
    for b, (h, w) in enumerate(MARKED):
        patches, markers = reference_marked(h, w, int(k[b]))
        stride = w + 1

        def nearest(j, centres):
            return min(centres, key=lambda p: ((p // stride - j // stride) ** 2 + (p % stride - j % stride) ** 2, p))

        owner = [nearest(j, markers if j % stride == w else patches) for j in range(h * stride)]
        assert kept_positions(merged.selection(), valid, b) == sorted(patches + markers)
        tokens = tokens_of(x, valid, b)
        for column, point in enumerate(sorted(patches + markers)):
            group = [j for j in range(h * stride) if owner[j] == point]
            np.testing.assert_allclose(merged.features[b, column].numpy(), tokens[group].mean(axis=0), rtol=1e-12)


# ----------------------------------------------------------------------------------- compiled on LLaVA-NeXT
def _setup():
    case = load_case("llava_next", None)
    model = case.models["sdpa"]
    return case, model, case.batch(model, "batch3")


def _schedule(case, ratio: float) -> tp.Schedule:
    return tp.Schedule([1.0] + [ratio] * (case.num_layers - 1))


def test_the_captured_layouts_are_the_models_own():
    case, model, batch = _setup()
    compiled = tp.compile(model, case.spec, _schedule(case, 0.5), scorer="fastervlm", self_check="off")
    logits_of(compiled, batch)
    layouts = anyres_layouts(case.models["eager"], batch.kwargs["image_sizes"])
    assert session_of(compiled).thread.vision_capture.maps.grids == layouts
    assert len({layout.tiles for layout in layouts}) == 3  # crop grids of different shapes


# 0.3: every part keeps tokens; 0.02: a crop grid's share of 1 cannot hold a row and moves to the base grid.
@pytest.mark.parametrize("ratio", [0.3, 0.02])
def test_grid_downsample_keeps_each_any_res_grids_even_subgrid(ratio):
    case, model, batch = _setup()
    compiled = tp.compile(model, case.spec, _schedule(case, ratio), scorer="grid-downsample", self_check="off")
    selection = check_selector_call(case, batch, compiled)  # masking reference, cached == uncached, batch invariance
    _, expected, _ = _expected_anyres(case, batch, ratio)
    assert {b: kept.tolist() for b, kept in enumerate(selection[1])} == expected
    for b, kept in enumerate(selection[1]):
        assert len(kept) == tp.keep_count(ratio, int(batch.vision_mask[b].sum()))


def _place(layout: TiledGrid, index: int) -> tuple[str, int, int]:
    """(part, row, column) of an any-res image's token: 'base', 'tiles' (a crop-grid patch) or 'newline'."""
    base = layout.counts()[0]
    if index < base:
        return "base", index // layout.base[1], index % layout.base[1]
    row, col = divmod(index - base, layout.tiles[1] + 1)
    return ("newline" if col == layout.tiles[1] else "tiles"), row, col


def test_grid_pool_merges_each_any_res_token_into_its_nearest_kept_token(monkeypatch):
    case, model, batch = _setup()
    seen = []
    real = registry("selector").get("grid-pool")

    def record(ctx, counts):
        answer = real(ctx, counts)
        seen.append((ctx.positions.clone(), (ctx.vision & ctx.valid).clone(), answer.owner.clone()))
        return answer

    record.needs_vision_side = True
    monkeypatch.setitem(registry("selector")._entries, "grid-pool", record)
    compiled = tp.compile(model, case.spec, _schedule(case, 0.3), scorer="grid-pool", self_check="off")
    check_selector_call(case, batch, compiled)
    _, _, per_image = _expected_anyres(case, batch, 0.3)
    positions, candidates, owner = seen[0]
    for b, images in enumerate(per_image):
        expected = {}
        for layout, where, chosen in images:
            for j in range(len(where)):
                part, row, col = _place(layout, j)
                centres = [_place(layout, c) + (c,) for c in chosen if _place(layout, c)[0] == part]
                if centres:
                    near = min(centres, key=lambda c: ((c[1] - row) ** 2 + (c[2] - col) ** 2, c[3]))
                    expected[where[j]] = where[near[3]]
        got = {int(positions[b, s]): int(positions[b, owner[b, s]])
               for s in candidates[b].nonzero()[:, 0] if int(owner[b, s]) >= 0}
        assert got == expected, b


def test_a_tiling_without_grids_is_refused(monkeypatch):
    """A tiling plug-in that gives its images no grid layout: the grid selectors refuse, naming what to do."""
    case, model, batch = _setup()  # loads the spec's plug-in module, which registers 'anyres'
    anyres = registry("vision_tiling").get("anyres")

    def no_grids(crops, image_sizes, config, where):
        scores = anyres(crops, image_sizes, config, where)
        return ImageScores(scores.scores, [None] * len(scores.counts), scores.counts)

    monkeypatch.setitem(registry("vision_tiling")._entries, "test-no-grids", no_grids)
    spec = case.spec.model_copy(update={"vision_side": case.spec.vision_side.model_copy(
        update={"tiling": "test-no-grids"})})
    compiled = tp.compile(model, spec, _schedule(case, 0.3), scorer="grid-downsample", self_check="off")
    with pytest.raises(UnsupportedError, match=r"image 0 has 52 of its 52 tokens at this cut and no patch grid.*"
                                               r"spec 'llava_next'.*whole patch grid.*first cut.*'fastervlm'"):
        logits_of(compiled, batch)
