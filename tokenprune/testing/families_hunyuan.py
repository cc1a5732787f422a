"""Test-input builder for HunYuanVL (HunyuanOCR).

An image is one span of ``image_token_id`` covering everything the patch merger emits: a begin token, per
merged row ``w`` patch tokens plus a newline token, and an end token (``h * (w + 1) + 2`` tokens, all of them
vision tokens), framed here by ``im_start_id``/``im_end_id``. Patches are flat ``(C * p * p)`` rows with (t, h, w) grids as in Qwen2-VL; the multimodal
position ids come from ``mm_token_type_ids`` (1 over the whole span).
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_mrope import _framed_inputs


def _hunyuan_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    merge = cfg.vision_config.spatial_merge_size
    n = grid[0] * (grid[1] // merge) * (grid[2] // merge + 1) + 2
    # Framed by im_start/im_end (text type): two adjacent images would otherwise form one span for
    # get_rope_index, which matches spans to image grids one to one.
    return [cfg.im_start_id] + [cfg.image_token_id] * n + [cfg.im_end_id], [0] + [1] * n + [0]


@register("test_inputs", "hunyuan_vl")
def hunyuan_vl_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """HunYuanVL: images only (the family has no video input)."""
    cfg = model.config
    vis = cfg.vision_config
    _uneven_qk_norms(model)
    special = {cfg.image_token_id, cfg.im_start_id, cfg.im_end_id, cfg.im_newline_id}
    return _framed_inputs(model, images_per_sample, text_lengths, gen, _hunyuan_visual_tokens,
                          lambda b, i: "image", vis.num_channels * vis.patch_size * vis.patch_size, special,
                          vision=lambda ids: ids == cfg.image_token_id)


def _uneven_qk_norms(model) -> None:
    """Give the per-head query/key norms uneven weights (idempotent: the same values at every call).

    HunYuanVL normalises q and k *after* RoPE. RoPE rotates channel pairs, which keeps the RMS over a head, so
    with the all-ones weights of a fresh model, norm-then-rotate equals rotate-then-norm and the tests could
    not tell the two orders apart; uneven weights make the scorer's order (attention.qk_norm_after_rope) matter.
    """
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for norm in (layer.self_attn.query_layernorm, layer.self_attn.key_layernorm):
                dim = norm.weight.shape[0]
                norm.weight.copy_(1.0 + 0.8 * torch.sin(torch.arange(dim, dtype=torch.float32) * 1.7))
