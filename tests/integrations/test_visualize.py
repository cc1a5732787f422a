"""Kept-patch pictures: vision tokens map to row-major patches, and the overlay draws one panel per cut."""

from __future__ import annotations

import pytest
import torch

import tokenprune as tp
from tokenprune.testing import build_test_model, make_test_inputs
from tokenprune.visualize import infer_grid, kept_patch_masks, plot_kept_patches, vision_positions


@pytest.fixture(scope="module")
def compiled():
    spec = tp.load_spec("llava")
    model = build_test_model(spec)
    batch = make_test_inputs(spec, model, [1, 1], [4, 9], seed=2)
    pruned = tp.compile(model, spec, tp.Schedule([1.0, 0.5, 0.25, 0.25]))
    with torch.no_grad():
        pruned(**batch.kwargs)
    return pruned, batch


def test_masks_follow_last_selection(compiled):
    pruned, batch = compiled
    for sample in (0, 1):
        masks = kept_patch_masks(pruned, batch.input_ids, sample)
        positions = vision_positions(batch.input_ids, [batch.image_token_id])[sample]
        assert sorted(masks) == [1, 2]
        for layer, mask in masks.items():
            kept = tp.last_selection(pruned)[layer][sample]
            assert torch.equal(positions[mask], kept)  # patch i <-> i-th vision token of the prompt
        assert int(masks[1].sum()) == 18 and int(masks[2].sum()) == 9  # ceil(0.5 * 36), ceil(0.25 * 36)
        assert bool((masks[2] <= masks[1]).all())  # what a later cut keeps, an earlier one kept


def test_overlay_has_one_panel_per_cut(compiled, tmp_path):
    pruned, batch = compiled
    fig = plot_kept_patches(pruned, batch.kwargs, sample=1, path=tmp_path / "k.png", title="t")
    assert len(fig.axes) == 3 and (tmp_path / "k.png").stat().st_size > 0
    assert fig.axes[1].get_title() == "layers 1+: kept 18/36"


def test_grid_must_fit_the_tokens():
    assert infer_grid(576) == (24, 24)
    assert infer_grid(12, (3, 4)) == (3, 4)
    with pytest.raises(tp.UnsupportedError, match="do not form a square patch grid"):
        infer_grid(10)
    with pytest.raises(tp.UnsupportedError, match="does not hold 12 vision tokens"):
        infer_grid(12, (5, 5))
