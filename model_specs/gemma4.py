"""Gemma 4 and Gemma 4 Unified (specs ``gemma4``, ``gemma4_unified``): tracing hints and test inputs.

``gemma4_kv_sharing``: the last layers of the text model project no keys/values of their own; they reuse those
that a *store* layer of the same type wrote into a ``KVSharingDict`` created at the top of the forward and passed
to every layer. Traced as is, that dict would be created once at trace time and become a constant shared by
every call; the hint creates it in the graph per call instead, marked as per-token state (see
``tokenprune.rewrites.hints_shared_kv``). Declare the layer argument as ``shared_kv`` (spec
``tracing.layer_kwargs``) and the attention's sharing attributes under ``attention.shared_kv``. The forward also
slices the inputs of the sharing layers to ``logits_to_keep`` (a generate-time shortcut whose branches the trace
cannot take); the traced root never passes ``logits_to_keep``, for which that slicing keeps everything, so it is
replaced by exactly that on the tracing root. The cache slots of the reusing layers are placeholders holding
nothing, which the runtime's cache checks skip.

``gemma4_per_layer_inputs``: per-layer embeddings (PLE), a (B, S, layers, D_ple) keyword of the text model's
forward that the multimodal model computes from the token ids; each layer receives its (B, S, D_ple) slice as
its second positional argument (declare it with ``tracing.layer_args: [tokens]``).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from tokenprune.errors import TraceError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints import STANDARD_INPUTS, TracingHint
from tokenprune.rewrites.hints_inputs import random_per_layer_inputs
from tokenprune.rewrites.hints_shared_kv import is_empty_cache_slot, kv_sharing_node


# ------------------------------------------------------------------ tracing hints
def _kv_sharing_proxy_class():
    from transformers.cache_utils import KVSharingDict

    class SharedKVProxy(fx.Proxy, KVSharingDict):
        """A proxy that passes the forward's ``isinstance(shared_kv_states, KVSharingDict)`` check, so the traced
        forward hands the graph's per-call dict to every layer instead of building one at trace time."""

    return SharedKVProxy


def _keep_kv_shared_inputs(self, hidden_states, *inputs, past_key_values=None, **kwargs):
    """``_maybe_slice_kv_shared_inputs`` with ``logits_to_keep=0`` (its last positional argument): every
    branch of the original returns the inputs unchanged (slice(-0, None) keeps all), and so does this."""
    *tensors, logits_to_keep = inputs
    if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        raise TraceError(describe(f"logits_to_keep={logits_to_keep!r} in the traced call",
                                  "hint gemma4_kv_sharing", "0 (the traced root never passes it)"))
    return (hidden_states, *tensors)


@register("tracing_hint", "gemma4_kv_sharing")
class Gemma4KVSharing(TracingHint):
    """A per-call KVSharingDict in the graph, handed to the forward as its ``shared_kv_states``."""

    name = "gemma4_kv_sharing"
    root_methods = {"_maybe_slice_kv_shared_inputs": _keep_kv_shared_inputs}
    plain_globals = ("KVSharingDict",)  # not autowrapped: the forward's isinstance check needs the class

    def inner_kwargs(self, inputs, variant):
        tracer = next(v.tracer for v in inputs.values() if isinstance(v, fx.Proxy))
        return {**inputs, "shared_kv_states": _kv_sharing_proxy_class()(kv_sharing_node(tracer), tracer)}

    def slot_stores_no_kv(self, slot) -> bool:
        return is_empty_cache_slot(slot)


def _project_per_layer_inputs(self, inputs_embeds, per_layer_inputs=None):
    """``Gemma4TextModel.project_per_layer_inputs`` with ``unflatten`` for its ``reshape(*shape[:-1], L, D)``,
    which the trace cannot unpack; the same operations otherwise (the self-check compares bit for bit)."""
    cfg = self.config
    projection = self.per_layer_model_projection(inputs_embeds) * self.per_layer_model_projection_scale
    projection = projection.unflatten(-1, (cfg.num_hidden_layers, self.hidden_size_per_layer_input))  # (B, S, L, D)
    projection = self.per_layer_projection_norm(projection)
    if per_layer_inputs is None:
        return projection
    return (projection + per_layer_inputs) * self.per_layer_input_scale


@register("tracing_hint", "gemma4_per_layer_inputs")
class Gemma4PerLayerInputs(TracingHint):
    """``per_layer_inputs`` (B, S, layers, D_ple) becomes a placeholder when the config has per-layer embeddings
    (``hidden_size_per_layer_input``); a caller that does not pass it gets it computed as the text model would
    (``get_per_layer_inputs``), before the graph."""

    name = "gemma4_per_layer_inputs"
    key = "per_layer_inputs"
    root_methods = {"project_per_layer_inputs": _project_per_layer_inputs}

    def _enabled(self) -> bool:
        return bool(getattr(getattr(self.lm, "config", None), "hidden_size_per_layer_input", 0))

    def variants(self):
        return ["present"] if self._enabled() else ["absent"]

    def input_names(self, variant):
        return STANDARD_INPUTS if variant == "absent" else STANDARD_INPUTS + (self.key,)

    def prepare(self, lm, params, past_len):
        if self._enabled() and params.get(self.key) is None:
            params[self.key] = lm.get_per_layer_inputs(params.get("input_ids"), params["inputs_embeds"])

    def choose(self, params, variant_key):
        return self.variants()[0]

    def graph_inputs(self, params, variant):
        return {} if variant == "absent" else {self.key: params[self.key]}

    def probe_variants(self, lm, params):
        if not self._enabled():
            return [("absent", {})]
        return [("present", random_per_layer_inputs(lm, params["inputs_embeds"], self.key, seed=11))]


# ------------------------------------------------------------------ test inputs
def _patch_grid(width: int, height: int, slots: int) -> torch.Tensor:
    """(slots, 2) (x, y) positions of a width x height patch grid, padded with (-1, -1) to ``slots``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.full((slots, 2), -1, dtype=torch.long)
    pos[: width * height] = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
    return pos


def _mark_vision_blocks(batch, image_token: int):
    """``mm_token_type_ids`` (1 at image tokens): the multimodal model makes each image a bidirectional block
    on its sliding-window layers when the config asks for it (use_bidirectional_attention='vision')."""
    types = (batch.input_ids == image_token).long()
    batch.kwargs["mm_token_type_ids"] = types
    split = batch.extra["split"]
    real = batch.kwargs["attention_mask"].bool()
    batch.extra["split"] = lambda b: {**split(b), "mm_token_type_ids": types[b:b + 1, real[b]]}
    return batch


@register("test_inputs", "gemma4")
def gemma4_inputs(model, images_per_sample, text_lengths, gen):
    """Patchified images (images, max_patches, 3 * p * p) with (x, y) patch positions ``image_position_ids``
    (-1 for padding); the vision tower pools ``pooling_kernel_size`` x ``pooling_kernel_size`` patches into one
    token. Even images use a full square grid of 4 x 4 tokens, odd ones half of it (padded), so images carry
    different token counts."""
    vis = model.config.vision_config
    side = 4 * vis.pooling_kernel_size
    return _gemma4_batch(model, images_per_sample, text_lengths, gen, side, 3 * vis.patch_size ** 2)


@register("test_inputs", "gemma4_unified")
def gemma4_unified_inputs(model, images_per_sample, text_lengths, gen):
    """Encoder-free: merged patches (images, max_patches, 3 * model_patch_size ** 2), one token per real patch;
    4 x 4 patches for even images, 4 x 2 (padded) for odd ones."""
    vis = model.config.vision_config
    return _gemma4_batch(model, images_per_sample, text_lengths, gen, 4, 3 * vis.model_patch_size ** 2)


def _gemma4_batch(model, images_per_sample, text_lengths, gen, side: int, patch_dim: int):
    """Images of side x side patches (even) or side x side/2 (odd, padded); each between begin/end-of-image
    tokens; token counts from the model's own ``get_image_features``."""
    from tokenprune.testing.families_more import Media, _count, _dtype, media_batch

    cfg = model.config
    slots = side * side
    total = sum(images_per_sample)
    grids = torch.stack([_patch_grid(side, side if i % 2 == 0 else side // 2, slots) for i in range(total)])
    pixels = torch.rand((total, slots, patch_dim), generator=gen).to(_dtype(model))
    pixels = pixels.masked_fill((grids < 0).all(-1)[..., None], 0.0)  # (images, slots, patch_dim)

    def image_kwargs(idx):
        return {"pixel_values": pixels[idx], "image_position_ids": grids[idx]}

    special = {cfg.image_token_id, cfg.boi_token_id, cfg.eoi_token_id, cfg.video_token_id, cfg.audio_token_id,
               cfg.boa_token_id}
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]), special=special)
    get_features = model.model.get_image_features
    batch = media_batch(model, images_per_sample, text_lengths, gen, media,
                        lambda i: _count(get_features, image_kwargs([i])))
    return _mark_vision_blocks(batch, cfg.image_token_id)
