"""Ernie 4.5 VL MoE (spec ``ernie4_5_vl_moe``): the token-type routing hint and test inputs.

``ernie4_5_vl_moe_token_types``: ``moe_mm_token_type_ids`` (0 text, 1 image, 2 video, vision start/end tokens
included) routes each token to the text or the vision experts of every MoE layer. It is a named parameter of the
text model's forward handed to every decoder layer, traced as a placeholder of its own variant (see
``tokenprune.rewrites.hints_inputs``). Declare it in the spec as ``layer_kwargs: {moe_mm_token_type_ids:
positions}`` (a (B, S) tensor, gathered like position ids).
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register
from tokenprune.rewrites.hints_inputs import PerTokenInput


@register("tracing_hint", "ernie4_5_vl_moe_token_types")
class MoeTokenTypes(PerTokenInput):
    """``moe_mm_token_type_ids`` (B, S) as a placeholder when given."""

    name = "ernie4_5_vl_moe_token_types"
    key = "moe_mm_token_type_ids"

    def prepare(self, lm, params, past_len):
        types = params.get(self.key)
        length = params["inputs_embeds"].shape[1]
        if types is not None and types.shape[-1] < length:
            # generate(use_cache=False) re-runs the prompt plus the generated tokens but does not extend this
            # input (Hugging Face's own model fails there); the tokens it lacks are generated text: type 0.
            params[self.key] = torch.nn.functional.pad(types, (0, length - types.shape[-1]))


# ------------------------------------------------------------------ test inputs
def _ernie_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    """<image_start> image tokens <image_end>, <video_start> video tokens <video_end>;
    a video's temporal patches are merged in pairs (``temporal_merge_size``)."""
    vis = cfg.vision_config
    n = grid[0] * grid[1] * grid[2] // (vis.spatial_merge_size ** 2)
    if not is_video:
        return [cfg.image_start_token_id] + [cfg.image_token_id] * n + [cfg.image_end_token_id], [0] + [1] * n + [0]
    n //= vis.temporal_merge_size
    return [cfg.video_start_token_id] + [cfg.video_token_id] * n + [cfg.video_end_token_id], [0] + [2] * n + [0]


@register("test_inputs", "ernie4_5_vl")
def ernie4_5_vl_inputs(model, images_per_sample, text_lengths, gen):
    """Patches (channels x patch x patch) with (t, h, w) grids; a sample's second visual input
    is a video. Besides ``mm_token_type_ids`` (3-D positions) the model takes ``moe_mm_token_type_ids``,
    which also types the start/end tokens (1 image, 2 video) and routes them to the vision experts."""
    from tokenprune.testing.families_mrope import _framed_inputs

    cfg = model.config
    vis = cfg.vision_config
    special = {cfg.image_token_id, cfg.video_token_id, cfg.image_start_token_id, cfg.image_end_token_id,
               cfg.video_start_token_id, cfg.video_end_token_id}

    def moe_types(ids):
        image = torch.isin(ids, torch.tensor([cfg.image_token_id, cfg.image_start_token_id, cfg.image_end_token_id]))
        video = torch.isin(ids, torch.tensor([cfg.video_token_id, cfg.video_start_token_id, cfg.video_end_token_id]))
        return image.long() + 2 * video.long()

    return _framed_inputs(model, images_per_sample, text_lengths, gen, _ernie_visual_tokens,
                          lambda b, i: "video" if i % 2 == 1 else "image", vis.in_channels * vis.patch_size ** 2,
                          special, vision=lambda ids: (ids == cfg.image_token_id) | (ids == cfg.video_token_id),
                          derived={"moe_mm_token_type_ids": moe_types})
