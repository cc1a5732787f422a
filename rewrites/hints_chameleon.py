"""Tracing hints for Chameleon, whose text model is also its multimodal model.

``ChameleonModel`` holds the token embeddings, the decoder layers *and* the VQ-VAE image tokenizer: its forward
takes ``pixel_values`` (or ``mm_encoder_outputs``), turns each image into discrete VQ codes, maps them to their
BPE ids, embeds those ids with the text embedding table and scatters the embeddings into the rows holding the
``<image>`` placeholder id (``vocabulary_map['<image>']``, ``config.image_token_id``). The traced graph starts
from ``inputs_embeds``, so the hint does that merge before the graph, exactly as the forward does (same methods,
same order); a call carrying pixels would otherwise run the graph on the placeholder embeddings. The vision
tokens are the placeholder rows (``vision_tokens.token_ids: [image_token_id]``), as Hugging Face's own
``get_placeholder_mask`` finds them.

The decoder layer depends on ``config.swin_norm``, and so does the scorer's input: ``ChameleonDecoderLayer``
(pre-norm) feeds ``input_layernorm(x)`` to ``q_proj``/``k_proj``; ``ChameleonSwinDecoderLayer`` (the norm
reordering the Chameleon paper uses for its largest model) feeds the raw layer input and applies
``input_layernorm`` after attention. A spec is written for one of the two (``layer.input_norm``), so each hint
admits one: ``chameleon`` (swin_norm false, the bundled spec) and ``chameleon_swin`` (swin_norm true, for a spec
with ``layer.input_norm: null``); the other layout is refused when compiling instead of scored wrongly.
"""

from __future__ import annotations

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register

from .hints import TracingHint


@register("tracing_hint", "chameleon")
class Chameleon(TracingHint):
    name = "chameleon"
    swin_norm = False  # the layer layout this hint's specs score for

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        swin = bool(getattr(getattr(lm, "config", None), "swin_norm", False))
        if lm is not None and swin != self.swin_norm:
            other = "chameleon_swin" if swin else "chameleon"
            layout = ("ChameleonSwinDecoderLayer: attention reads the raw layer input, input_layernorm comes after it"
                      if swin else "ChameleonDecoderLayer: input_layernorm comes before q_proj/k_proj")
            raise UnsupportedError(describe(
                f"a Chameleon model with swin_norm={swin} ({layout})", f"tracing hint {self.name!r}",
                f"swin_norm={self.swin_norm}, the layer layout this hint's specs score for",
                f"use a spec with tracing.hints: [{other}] and layer.input_norm: "
                f"{'null' if swin else 'input_layernorm'}"))

    def prepare(self, lm, params, past_len):
        pixel_values = params.pop("pixel_values", None)
        encoded = params.pop("mm_encoder_outputs", None)
        if pixel_values is not None and encoded is not None:  # the forward's own check
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs at the same time")
        encoded = encoded if encoded is not None else {}
        if encoded.get("image") is None and pixel_values is not None:
            encoded["image"] = lm.get_image_features(pixel_values, return_dict=True)
        if encoded.get("image") is not None:
            features = encoded["image"].pooler_output
            embeds = params["inputs_embeds"]
            mask = lm.get_placeholder_mask(params.get("input_ids"), inputs_embeds=embeds, image_features=features)
            params["inputs_embeds"] = embeds.masked_scatter(mask, features)


@register("tracing_hint", "chameleon_swin")
class ChameleonSwin(Chameleon):
    name = "chameleon_swin"
    swin_norm = True
