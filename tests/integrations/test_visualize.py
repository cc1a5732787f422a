"""Kept-patch pictures: vision tokens map to row-major patches, and the overlay draws one panel per cut."""

from __future__ import annotations


import pytest
import torch

import tokenprune as tp
from tokenprune.spec_testdata import load_test_model
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


def _panels(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_overlay_has_the_image_then_one_panel_per_distinct_cut(compiled, tmp_path):
    pruned, batch = compiled
    fig = plot_kept_patches(pruned, batch.kwargs, sample=1, path=tmp_path / "k.png", title="t")
    assert (tmp_path / "k.png").stat().st_size > 0
    assert [ax.get_title() for ax in _panels(fig)] == ["input: 36 tokens (layer 0)", "layer 1: 18/36 kept",
                                                       "layers 2\u20133: 9/36 kept"]


def _figure_for(schedule: tp.Schedule, grid_side: int, **kwargs):
    """A figure for a LLaVA test model whose image is ``grid_side``² vision tokens."""
    spec = tp.load_spec("llava")
    test = load_test_model(spec)
    config = test.config
    layers = schedule.num_layers
    text = {**config["text_config"], "num_hidden_layers": layers}
    vision = {**config["vision_config"], "image_size": 4 * grid_side}
    model = build_test_model(spec, test=test.model_copy(
        update={"config": {**config, "text_config": text, "vision_config": vision}}))
    batch = make_test_inputs(spec, model, [1], [5], seed=0)
    return plot_kept_patches(tp.compile(model, spec, schedule), batch.kwargs, **kwargs)


SPANS = {  # 12 layers; the last cuts lower the ratio without changing ceil(r * N), so they keep the same tokens
    12: ([1, 1, .5, .5, .3, .2, .1, .069, .068, .067, .066, .065],
         ["layers 2\u20133: 72/144 kept", "layer 4: 44/144 kept", "layer 5: 29/144 kept", "layer 6: 15/144 kept",
          "layers 7\u201311: 10/144 kept"]),
    24: ([1, 1, .5, .5, .3, .2, .1, .05, .0173, .0172, .0171, .0171],
         ["layers 2\u20133: 288/576 kept", "layer 4: 173/576 kept", "layer 5: 116/576 kept", "layer 6: 58/576 kept",
          "layer 7: 29/576 kept", "layers 8\u201311: 10/576 kept"]),
}


@pytest.mark.parametrize("grid_side", sorted(SPANS))  # 144 tokens (the reference model) and 576 (LLaVA-1.5)
def test_identical_cuts_share_a_panel_and_the_picture_reads_at_normal_size(grid_side):
    ratios, spans = SPANS[grid_side]
    schedule = tp.Schedule(ratios)
    fig = _figure_for(schedule, grid_side, question="what color is the square", answer="red")
    titles = [ax.get_title() for ax in _panels(fig)]
    assert titles == [f"input: {grid_side ** 2} tokens (layers 0\u20131)", *spans]
    assert len(titles) < 1 + len(schedule.cuts)  # merged: fewer panels than cuts
    heading = fig._suptitle.get_text()
    assert "Q: what color is the square" in heading and "A: red" in heading
    width, height = fig.get_size_inches()
    assert width <= 10 and height <= 8 and 0.8 <= width / height <= 2.5  # a grid, not a 30-inch strip
    fig.canvas.draw()  # lays the panels out
    inches = [round(ax.get_position().width * width, 2) for ax in _panels(fig)]
    assert min(inches) >= 1.6, inches  # every panel readable at 110 dpi


def test_grid_must_fit_the_tokens():
    assert infer_grid(576) == (24, 24)
    assert infer_grid(12, (3, 4)) == (3, 4)
    with pytest.raises(tp.UnsupportedError, match="do not form a square patch grid"):
        infer_grid(10)
    with pytest.raises(tp.UnsupportedError, match="does not hold 12 vision tokens"):
        infer_grid(12, (5, 5))
