"""Granite 4 Vision (spec ``granite4_vision``): the layer-features tracing hint and test inputs (LLaVA-NeXT any-res
tiles through Window Q-Former projectors).

``granite4_vision_layer_features``: the text model adds vision features before chosen layers.

``Granite4VisionTextModel.forward`` takes ``vision_mask`` (a ``(B, S, 1)`` bool mask of the image positions)
and ``deepstack_features``, a dict mapping a decoder-layer index to ``(num_image_tokens, D)`` projected
features. Inside the layer loop, before every layer whose index is a key, it adds the features to the hidden
states at the masked positions. The keys come from the config (``deepstack_layer_map`` llm layers and
``spatial_target_layers``), so the dict becomes one placeholder per key (plus the mask) in a graph variant of
its own; the loop's ``layer_idx in deepstack_features`` is then answered at trace time, exactly as at run time.
The features are laid out by the image positions: a cut before an injection gathers the mask and the rows of the
kept positions (``vision_position_inputs``, see ``tokenprune.rewrites.vision_features``).
"""

from __future__ import annotations

import torch

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints import STANDARD_INPUTS, TracingHint


@register("tracing_hint", "granite4_vision_layer_features")
class LayerFeatures(TracingHint):
    name = "granite4_vision_layer_features"
    consumed_kwargs = ("vision_mask", "deepstack_features")
    vision_position_inputs = {"layer_features_": "vision_mask"}  # placeholder prefix -> the mask its rows follow

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


# ------------------------------------------------------------------ test inputs
def _granite4v_counts(model, pixel_kwargs) -> list[int]:
    """Each image's token count from the model's own vision path: the length of its packed features (every
    projector packs the same count; the first one sets the placeholder mask)."""
    with torch.no_grad():
        out = model.model.get_image_features(**pixel_kwargs)
    _, packed = out.deepstack_features[0]
    return [f.shape[0] for f in packed]


@register("test_inputs", "granite4_vision")
def granite4_vision_inputs(model, images_per_sample, text_lengths, gen):
    """``pixel_values`` (images, max tiles, 3, H, W) padded with zero tiles and
    ``image_sizes`` (images, 2), as the LLaVA-NeXT processor gives; sizes land on different any-res grids, so
    samples carry different token counts (downsampled by ``downsample_rate``, unpadded, newline tokens)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    from tokenprune.testing.families import _batch, _image_ranges, _pixels, _prompts

    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    shapes = [[side, 2 * side], [2 * side, 2 * side], [side + side // 4, side]]
    total = sum(images_per_sample)
    sizes = [shapes[i % 3] for i in range(total)]
    patches = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, side) for s in sizes]
    pixels = torch.zeros((total, max(patches, default=1), 3, side, side), dtype=dtype)
    for i, n in enumerate(patches):
        pixels[i, :n] = _pixels(n, 3, side, gen, dtype)
    image_sizes = torch.tensor(sizes, dtype=torch.long).reshape(total, 2)

    def pixel_kwargs(idx):
        return {"pixel_values": pixels[idx], "image_sizes": image_sizes[idx]}

    counts = []
    for i in range(total):
        counts += _granite4v_counts(model, pixel_kwargs([i]))
    ranges = _image_ranges(images_per_sample)
    seqs = _prompts(images_per_sample, text_lengths, None, cfg.image_token_id, cfg.text_config.vocab_size, gen,
                    per_sample_counts=[counts[r] for r in ranges])
    extra = pixel_kwargs(list(range(total))) if total else {}
    return _batch(model, seqs, extra, cfg.image_token_id,
                  split=lambda b: pixel_kwargs(list(range(ranges[b].start, ranges[b].stop))))
