"""Qwen2-VL family (Qwen2-VL, Qwen2.5-VL): how their vision towers' attention is read for the vision-encoder
selectors (spec ``vision_side.reader``).

The towers pack every image's patches into one sequence with a fused qkv projection and the vision rotary
embedding, attend within ``cu_seqlens`` blocks (images, frames or, for Qwen2.5-VL, windows) and merge 2x2
patch units into one language-model token. There is no [CLS]: a token's score is the mean attention its
patches receive over the queries of their image.
"""

from __future__ import annotations

import itertools
import sys

import torch

from tokenprune.plugins import register
from tokenprune.scoring.tower_attention import ImageScores, TowerLayout, attention_scale, received_attention


def _read_qwen(attn, args: tuple, kwargs: dict, layout: TowerLayout, grid_thw, window_index) -> ImageScores:
    x = args[0] if args else kwargs["hidden_states"]  # (S, D) every image's patches, packed
    cu_seqlens = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
    cos, sin = kwargs["position_embeddings"]
    seq = x.shape[0]
    q, k, _ = attn.qkv(x).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # each (S, H, Dh)
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision  # the tower's own rotary
    q, k = rotate(q, k, cos, sin)
    scale = attention_scale(attn)
    received = torch.zeros(seq, dtype=torch.float32, device=x.device)
    bounds = cu_seqlens.tolist()
    for start, stop in itertools.pairwise(bounds):  # attention stays inside each block (image, frame, window)
        qs, ks = q[start:stop].transpose(0, 1)[None], k[start:stop].transpose(0, 1)[None]  # (1, H, L, Dh)
        received[start:stop] = received_attention(qs, ks, scale, None)[0]
    unit = layout.merge ** 2
    units = received.reshape(-1, unit).sum(dim=1)  # (S / unit,) merged patches sum
    if window_index is not None:  # the tower ran its units in window order: put them back in image order
        units = torch.empty_like(units).scatter_(0, window_index.to(units.device), units)
    counts, grids, divisors = [], [], []
    for t, h, w in grid_thw.tolist():
        counts.append(t * h * w // unit)
        grids.append((t * h // layout.merge, w // layout.merge))
        divisors.append(torch.full((t * h * w // unit,), float(t * h * w), device=x.device))
    return ImageScores(units / torch.cat(divisors), grids, counts)


@register("tower_reader", "qwen2_vl")
def read_qwen2_vl(attn, args, kwargs, layout: TowerLayout, grid_thw=None, tower=None) -> ImageScores:
    """Qwen2-VL: fused qkv, vision rotary, attention per cu_seqlens block, 2x2 units of consecutive tokens."""
    return _read_qwen(attn, args, kwargs, layout, grid_thw, None)


@register("tower_reader", "qwen2_5_vl")
def read_qwen2_5_vl(attn, args, kwargs, layout: TowerLayout, grid_thw=None, tower=None) -> ImageScores:
    """Qwen2.5-VL: as Qwen2-VL, inside the tower's window order (``tower.get_window_index``'s permutation)."""
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=tower.spatial_merge_size,
                                              window_size=tower.window_size, patch_size=tower.patch_size)
    return _read_qwen(attn, args, kwargs, layout, grid_thw, window_index)
