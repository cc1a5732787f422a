"""Tracing hint for Granite 4 Vision, whose text model adds vision features before chosen layers.

``Granite4VisionTextModel.forward`` takes ``vision_mask`` (a ``(B, S, 1)`` bool mask of the image positions)
and ``deepstack_features``, a dict mapping a decoder-layer index to ``(num_image_tokens, D)`` projected
features. Inside the layer loop, before every layer whose index is a key, it adds the features to the hidden
states at the masked positions. The keys come from the config (``deepstack_layer_map`` llm layers and
``spatial_target_layers``), so the dict becomes one placeholder per key (plus the mask) in a graph variant of
its own; the loop's ``layer_idx in deepstack_features`` is then answered at trace time, exactly as at run time.
The features are laid out by the unpruned image positions, so the completeness analysis refuses a cut that an
injection reads from after it (cuts must sit at the last injection layer or deeper: the test data's
``first_cut``).
"""

from __future__ import annotations

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.registry import register

from .hints import STANDARD_INPUTS, TracingHint


@register("tracing_hint", "layer_features")
class LayerFeatures(TracingHint):
    name = "layer_features"

    def __init__(self, lm=None, model_config=None):
        super().__init__(lm, model_config)
        pairs = getattr(model_config, "deepstack_layer_map", None) or []
        spatial = getattr(model_config, "spatial_target_layers", None) or []
        self.layers = tuple(sorted({int(layer) for _, layer in pairs} | {int(layer) for layer in spatial}))

    def _key(self, layer: int) -> str:
        return f"layer_features_{layer}".replace("-", "m")

    def variants(self):
        return ["plain", "features"]

    def input_names(self, variant):
        if variant == "plain":
            return STANDARD_INPUTS
        return STANDARD_INPUTS + ("vision_mask",) + tuple(self._key(layer) for layer in self.layers)

    def inner_kwargs(self, inputs, variant):
        if variant == "plain":
            return inputs
        keys = {self._key(layer) for layer in self.layers}
        out = {k: v for k, v in inputs.items() if k not in keys}
        out["deepstack_features"] = {layer: inputs[self._key(layer)] for layer in self.layers}
        return out

    def consume(self, extra: dict, params: dict) -> None:
        for key in ("vision_mask", "deepstack_features"):
            if key in extra:  # named parameters of the forward arrive in params already
                params[key] = extra.pop(key)

    def choose(self, params, variant_key):
        features = params.get("deepstack_features")
        if features is None:
            return "plain"
        if not isinstance(features, dict) or {int(k) for k in features} != set(self.layers):
            found = sorted(features) if isinstance(features, dict) else type(features).__name__
            raise TraceError(describe(f"deepstack_features for layers {found}", "deepstack_features",
                                      f"a dict with exactly the configured layers {list(self.layers)}"))
        if params.get("vision_mask") is None:
            raise TraceError(describe("deepstack_features without vision_mask", "vision_mask",
                                      "the (B, S, 1) image-position mask the multimodal model passes"))
        return "features"

    def graph_inputs(self, params, variant):
        if variant == "plain":
            return {}
        out = {"vision_mask": params["vision_mask"]}
        out.update({self._key(layer): params["deepstack_features"][layer] for layer in self.layers})
        return out

    def probe_variants(self, lm, params):
        embeds = params["inputs_embeds"]
        mask = torch.zeros((*embeds.shape[:2], 1), dtype=torch.bool, device=embeds.device)
        mask[:, 1:4] = True  # the probe's vision slots
        gen = torch.Generator(device="cpu").manual_seed(7)
        n = int(mask.sum())
        feats = {layer: torch.randn(n, embeds.shape[-1], generator=gen).to(embeds) for layer in self.layers}
        return [("plain", {}), ("features", {"vision_mask": mask, "deepstack_features": feats})]
