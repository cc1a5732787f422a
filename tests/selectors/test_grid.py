"""Grid downsampling and window pooling against per-sample references on the patch grid."""

import math

import numpy as np
import pytest
import torch

from tokenprune.selectors import SelectorInputError, grid_downsample, grid_pool, grid_pool_around

from .helpers import RATIOS, assert_batch_invariant, assert_keep_all, assert_valid_selection, counts, kept_positions
from .helpers import padded_batch, tokens_of

GRIDS = [(3, 4), (5, 5), (1, 7), (4, 2)]


def reference_downsample(h: int, w: int, k: int) -> list[int]:
    """Cell centres of an h' x w' sub-grid (h' ~ sqrt(k h / w)), thinned evenly to k points, row-major."""
    if k == 0:
        return []
    rows = min(h, max(1, round(math.sqrt(k * h / w))))
    cols = min(w, math.ceil(k / rows))
    if rows * cols < k:
        rows = math.ceil(k / cols)
    points = [((2 * i + 1) * h // (2 * rows), (2 * j + 1) * w // (2 * cols)) for i in range(rows) for j in range(cols)]
    chosen = [points[t * len(points) // k] for t in range(k)]
    return [r * w + c for r, c in chosen]


def _batch(seed: int, scattered: bool):
    x, valid = padded_batch(seed, [h * w for h, w in GRIDS], dim=5, scattered=scattered)
    return x, valid, torch.tensor(GRIDS)


@pytest.mark.parametrize("scattered", [False, True])
@pytest.mark.parametrize("ratio", (*RATIOS, 0.0))
def test_downsample_matches_reference(ratio, scattered):
    _, valid, grid = _batch(0, scattered)
    k = counts(valid, ratio)
    selection = grid_downsample(valid, k, grid)
    assert_valid_selection(selection, valid, k)
    for b, (h, w) in enumerate(GRIDS):
        assert kept_positions(selection, valid, b) == reference_downsample(h, w, int(k[b]))


def test_downsample_spreads_over_the_grid():
    valid = torch.ones(1, 24 * 24, dtype=torch.bool)
    kept = kept_positions(grid_downsample(valid, torch.tensor([64]), torch.tensor([[24, 24]])), valid, 0)
    assert sorted({p // 24 for p in kept}) == [1, 4, 7, 10, 13, 16, 19, 22]   # 8 x 8 cell centres
    assert sorted({p % 24 for p in kept}) == [1, 4, 7, 10, 13, 16, 19, 22]


def test_downsample_keep_all_and_batch_invariance():
    x, valid, grid = _batch(1, scattered=True)
    assert_keep_all(lambda x, v, k: grid_downsample(v, k, grid), x, valid)
    assert_batch_invariant(lambda x, v, k, g: grid_downsample(v, k, g), x, valid, counts(valid, 0.4),
                           samplewise=(grid,))


@pytest.mark.parametrize("window", [(2, 2), (1, 3), (3, 2)])
def test_pool_averages_each_window_at_its_top_left(window):
    x, valid, grid = _batch(2, scattered=True)
    merge = grid_pool(x, valid, grid, window)
    for b, (h, w) in enumerate(GRIDS):
        tokens = tokens_of(x, valid, b).reshape(h, w, -1)
        corners = [(r, c) for r in range(0, h, window[0]) for c in range(0, w, window[1])]
        expected = np.stack([tokens[r:r + window[0], c:c + window[1]].reshape(-1, x.shape[2]).mean(0)
                             for r, c in corners])
        slots = valid[b].nonzero().squeeze(1)
        assert merge.indices[b][merge.mask[b]].tolist() == slots[[r * w + c for r, c in corners]].tolist()
        np.testing.assert_allclose(merge.features[b][merge.mask[b]].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_a_grid_that_does_not_fit_is_refused():
    _, valid, grid = _batch(0, False)
    with pytest.raises(SelectorInputError, match="rows \\* columns = N_b"):
        grid_downsample(valid, counts(valid, 0.5), grid.flip(0))


@pytest.mark.parametrize("scattered", [False, True])
def test_grid_pool_around_merges_into_the_nearest_downsampled_point(scattered):
    x, valid = padded_batch(7, [h * w for h, w in GRIDS], scattered=scattered)
    grid = torch.tensor(GRIDS)
    k = counts(valid, 0.4)
    merged = grid_pool_around(x, valid, k, grid)
    for b, (h, w) in enumerate(GRIDS):
        points = reference_downsample(h, w, int(k[b]))
        owner = [min(points, key=lambda p: ((p // w - j // w) ** 2 + (p % w - j % w) ** 2, p)) for j in range(h * w)]
        assert kept_positions(merged.selection(), valid, b) == sorted(points)
        tokens = tokens_of(x, valid, b)
        for column, point in enumerate(sorted(points)):
            group = [j for j in range(h * w) if owner[j] == point]
            np.testing.assert_allclose(merged.features[b, column].numpy(), tokens[group].mean(axis=0), rtol=1e-12)
