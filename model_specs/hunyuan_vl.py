"""HunYuanVL (HunyuanOCR, spec ``hunyuan_vl``): the position-row tracing hint and test inputs.

``hunyuan_vl_mrope_axes``: the text model's multimodal RoPE takes one position row per configured axis. It reads
the number of axes from ``rope_parameters["mrope_section"]`` (3 or 4 by checkpoint) and branches on the rank and
row count of ``position_ids``: 2-D ids are expanded to one row per axis, ``axes + 1`` rows would be a packed
text row (which it then refuses), and ``axes`` rows are used as is. ``forward()`` (``get_rope_index``) and
``generate()`` (``_prepare_position_ids_for_generation``) both pass ``axes`` rows, so one graph, traced with a
proxy that reports that rank and row count, serves every call.

Test inputs: an image is one span of ``image_token_id`` covering everything the patch merger emits: a begin
token, per merged row ``w`` patch tokens plus a newline token, and an end token (``h * (w + 1) + 2`` tokens, all
of them vision tokens), framed here by ``im_start_id``/``im_end_id``. Patches are flat ``(C * p * p)`` rows with
(t, h, w) grids as in Qwen2-VL; the multimodal position ids come from ``mm_token_type_ids`` (1 over the whole
span).
"""

from __future__ import annotations

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints import StaticShapeProxy, TracingHint


@register("tracing_hint", "hunyuan_vl_mrope_axes")
class MRopeAxes(TracingHint):
    """Position ids of shape (axes, B, S), axes = ``len(text_config.rope_parameters["mrope_section"])``."""

    name = "hunyuan_vl_mrope_axes"

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        rope = getattr(getattr(lm, "config", None), "rope_parameters", None) or {}
        self.axes = len(rope.get("mrope_section") or [])

    def placeholder_proxy(self, tracer, node, variant):
        if node.target == "position_ids":
            if not self.axes:
                raise TraceError(describe("a text config without rope_parameters['mrope_section']",
                                          "tracing.hints: hunyuan_vl_mrope_axes", "an mRoPE text model"))
            return StaticShapeProxy(node, tracer, ndim=3, first=self.axes)
        return None

    def prepare(self, lm, params, past_len):
        pos = params["position_ids"]  # the standard hint filled (1, S) ids when the caller passed none
        if pos.dim() == 2:
            pos = pos[None].expand(self.axes, pos.shape[0], -1)  # (axes, B, S), as the text model expands
        params["position_ids"] = pos

    def choose(self, params, variant_key):
        rows = params["position_ids"].shape[0]
        if params["position_ids"].dim() != 3 or rows != self.axes:
            raise TraceError(describe(f"position ids of shape {tuple(params['position_ids'].shape)}", "position_ids",
                                      f"({self.axes}, B, S): one row per mrope_section axis"))
        return None

    def probe_variants(self, lm, params):
        embeds = params["inputs_embeds"]
        bsz, length = embeds.shape[:2]
        text = (params["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # (B, S)
        rows = text[None].expand(self.axes, bsz, length).clone()
        rows[-1, :, 1:4] = 0  # the probe's vision slots: an image-index axis that differs from the text row
        return [(None, {"position_ids": rows})]


# ------------------------------------------------------------------ test inputs
def _hunyuan_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    merge = cfg.vision_config.spatial_merge_size
    n = grid[0] * (grid[1] // merge) * (grid[2] // merge + 1) + 2
    # Framed by im_start/im_end (text type): two adjacent images would otherwise form one span for
    # get_rope_index, which matches spans to image grids one to one.
    return [cfg.im_start_id] + [cfg.image_token_id] * n + [cfg.im_end_id], [0] + [1] * n + [0]


@register("test_inputs", "hunyuan_vl")
def hunyuan_vl_inputs(model, images_per_sample, text_lengths, gen):
    """Images only (the family has no video input)."""
    from tokenprune.testing.families_mrope import _framed_inputs

    cfg = model.config
    vis = cfg.vision_config
    _uneven_qk_norms(model)
    special = {cfg.image_token_id, cfg.im_start_id, cfg.im_end_id, cfg.im_newline_id}
    return _framed_inputs(model, images_per_sample, text_lengths, gen, _hunyuan_visual_tokens,
                          lambda b, i: "image", vis.num_channels * vis.patch_size * vis.patch_size, special,
                          vision=lambda ids: ids == cfg.image_token_id)


def _uneven_qk_norms(model) -> None:
    """Give the per-head query/key norms uneven weights (idempotent: the same values at every call).

    The family normalises q and k *after* RoPE. RoPE rotates channel pairs, which keeps the RMS over a head, so
    with the all-ones weights of a fresh model, norm-then-rotate equals rotate-then-norm and the tests could
    not tell the two orders apart; uneven weights make the scorer's order (attention.qk_norm_after_rope) matter.
    """
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for norm in (layer.self_attn.query_layernorm, layer.self_attn.key_layernorm):
                dim = norm.weight.shape[0]
                norm.weight.copy_(1.0 + 0.8 * torch.sin(torch.arange(dim, dtype=torch.float32) * 1.7))
