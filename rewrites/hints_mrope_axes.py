"""Tracing hint for text models whose multimodal RoPE takes one position row per configured axis.

HunYuanVL's text model reads the number of axes from ``rope_parameters["mrope_section"]`` (3 or 4 by
checkpoint) and branches on the rank and row count of ``position_ids``: 2-D ids are expanded to one row per
axis, ``axes + 1`` rows would be a packed text row (which it then refuses), and ``axes`` rows are used as is.
``forward()`` (``get_rope_index``) and ``generate()`` (``_prepare_position_ids_for_generation``) both pass
``axes`` rows, so one graph, traced with a proxy that reports that rank and row count, serves every call.
"""

from __future__ import annotations


from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register

from .hints import TracingHint, _StaticShapeProxy


@register("tracing_hint", "mrope_axes")
class MRopeAxes(TracingHint):
    """Position ids of shape (axes, B, S), axes = ``len(text_config.rope_parameters["mrope_section"])``."""

    name = "mrope_axes"

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        rope = getattr(getattr(lm, "config", None), "rope_parameters", None) or {}
        self.axes = len(rope.get("mrope_section") or [])

    def placeholder_proxy(self, tracer, node, variant):
        if node.target == "position_ids":
            if not self.axes:
                raise TraceError(describe("a text config without rope_parameters['mrope_section']",
                                          "tracing.hints: mrope_axes", "an mRoPE text model"))
            return _StaticShapeProxy(node, tracer, ndim=3, first=self.axes)
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
