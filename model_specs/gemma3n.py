"""Gemma 3n (spec ``gemma3n``): tracing hints, the hidden-state layout, and the test model's stand-in tower and
inputs.

``gemma3n_kv_sharing``: the last ``num_kv_shared_layers`` layers project no keys/values and reuse those a *store*
layer of their type wrote into a ``KVSharingDict`` passed to every layer. The forward creates that dict
unconditionally (no keyword to hand one in), so fx would build it once at trace time and bake it into the graph;
the hint (``tokenprune.rewrites.hints_shared_kv``) turns it into a graph node creating a fresh one per call.
Declare the layer argument as ``shared_kv`` (``tracing.layer_kwargs``) and the attention's sharing attributes
under ``attention.shared_kv``.

``gemma3n_per_layer_inputs``: the per-layer embeddings ``per_layer_inputs`` (B, S, layers, D_ple), which the
multimodal model computes from the token ids, become a placeholder when given (a caller passing embeddings only
gets the forward's projection alone, as the original does). Each layer receives its (B, S, D_ple) slice as its
third positional argument, after the rotary (cos, sin): declare ``tracing.layer_args: [rope, tokens]``.

``gemma3n_altup`` (``tracing.hidden_states``): the layers pass each other a stack of AltUp streams.

Test model: the checkpoints use a timm MobileNetV5 tower (``TimmWrapperModel``). timm cannot be installed in CI (it
needs torchvision, whose PyPI wheel for our torch is built against CUDA torch), and the config pins its
``vision_config`` to ``Gemma3nVisionConfig`` (a dict is always read as one, whatever its ``model_type``), so no
transformers tower can stand in through the config alone. The stand-in is a ``Gemma3nVisionConfig`` subclass of its
own model type, built by the spec's ``test_model.stand_ins``, whose model is a tiny convolutional tower with the
timm tower's output layout: (images, hidden_size, h, w), flattened by the model's own ``get_image_features`` to
h * w soft tokens. tokenprune works on the text model after the features are merged, which is the family's own.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from tokenprune.errors import SpecError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hidden_states import PlainHiddenStates
from tokenprune.rewrites.hints_inputs import PerTokenInput, random_per_layer_inputs
from tokenprune.rewrites.hints_shared_kv import ForwardCreatedKVSharing


# ------------------------------------------------------------------ tracing hints
@register("tracing_hint", "gemma3n_kv_sharing")
class Gemma3nKVSharing(ForwardCreatedKVSharing):
    """The KVSharingDict the traced forward builds becomes a per-call graph node, marked as per-token state."""

    name = "gemma3n_kv_sharing"


def _project_per_layer_inputs(self, inputs_embeds, per_layer_inputs=None):
    """``Gemma3nTextModel.project_per_layer_inputs`` with ``unflatten`` for its ``reshape(*shape[:-1], L, D)``,
    which the trace cannot unpack, and an unconditional slice for its shape-dependent one (the slice keeps
    everything when the shapes already match); the same operations otherwise (the self-check compares bit for
    bit)."""
    layers, width = self.config.num_hidden_layers, self.hidden_size_per_layer_input
    projection = self.per_layer_model_projection(inputs_embeds)  # (B, S, L * D_ple)
    projection = projection * self.per_layer_projection_scale.to(dtype=inputs_embeds.dtype,
                                                                 device=projection.device)
    projection = self.per_layer_projection_norm(projection.unflatten(-1, (layers, width)))  # (B, S, L, D_ple)
    if per_layer_inputs is None:
        return projection
    per_layer_inputs = per_layer_inputs[..., :layers, :]  # tables padded with more layers are sliced
    return (projection + per_layer_inputs) * self.per_layer_input_scale.to(dtype=inputs_embeds.dtype,
                                                                           device=projection.device)


@register("tracing_hint", "gemma3n_per_layer_inputs")
class Gemma3nPerLayerInputs(PerTokenInput):
    """Gemma 3n: ``per_layer_inputs`` (B, S, layers, D_ple) is a placeholder of the "present" variant."""

    name = "gemma3n_per_layer_inputs"
    key = "per_layer_inputs"
    root_methods = {"project_per_layer_inputs": _project_per_layer_inputs}

    def prepare(self, lm, params, past_len):
        # A caller passing token ids gets them embedded before the graph; the forward then derives the per-layer
        # inputs from those ids (replacing any given), and so does this.
        if params.get("input_ids") is not None:
            params[self.key] = lm.get_per_layer_inputs(params["input_ids"])

    def probe_variants(self, lm, params):
        return [("absent", {}), ("present", random_per_layer_inputs(lm, params["inputs_embeds"], self.key, seed=13))]


# ------------------------------------------------------------------ hidden-state layout
@register("hidden_states", "gemma3n_altup")
class Gemma3nAltUpHiddenStates(PlainHiddenStates):
    """A stack of ``altup_num_inputs`` hidden streams (streams, B, S, D). Each layer first predicts
    every stream from a per-token mix of all of them (``altup.predict``, router coefficients computed per token)
    and attends to the active stream's prediction, so dropping a token drops it from every stream."""

    batch_axis = 1
    token_axis = 2

    def attention_input(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        altup = getattr(layer, "altup", None)
        active = getattr(getattr(layer, "config", None), "altup_active_idx", None)
        if altup is None or active is None or hidden.dim() != 4:
            raise SpecError(describe(
                f"{type(layer).__name__} with hidden states of shape {tuple(hidden.shape)}",
                "spec tracing.hidden_states: gemma3n_altup",
                "an AltUp decoder layer (an `altup` module, config.altup_active_idx) receiving (streams, B, S, D)",
                "use tracing.hidden_states: plain for this family"))
        return layer.altup.predict(hidden)[active]  # (B, n, D), as the layer computes it


# ------------------------------------------------------------------ test model
# Side of the square test images; the stand-in tower reduces them by its patch size.
_SIDE = 32


@functools.cache
def _stand_in_classes():
    """The stand-in config and tower classes, registered with ``AutoModel`` (so ``Gemma3nModel`` builds the
    tower from the config) the first time a test model needs them; nothing is registered on import."""
    from transformers import AutoModel, Gemma3nVisionConfig, PreTrainedModel
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    class StandInVisionConfig(Gemma3nVisionConfig):
        """Gemma3nVisionConfig of a test-only tower; ``model_args.patch_size`` is its downsampling."""

        model_type = "tokenprune_gemma3n_stand_in_vision"

    class StandInVisionTower(PreTrainedModel):
        """(images, 3, H, W) -> (images, hidden_size, H / p, W / p): a patch convolution plus one depthwise
        residual block, the layout of the MobileNetV5 tower's last feature map."""

        config_class = StandInVisionConfig
        main_input_name = "pixel_values"
        base_model_prefix = "stand_in"
        _supports_sdpa = True  # no attention at all: the model's sdpa choice must not refuse the tower

        def __init__(self, config):
            super().__init__(config)
            width, patch = config.hidden_size, config.model_args["patch_size"]
            self.patch = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
            self.depthwise = nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width)
            self.pointwise = nn.Conv2d(width, width, kernel_size=1)
            self.post_init()

        def forward(self, pixel_values, do_pooling=None, return_dict=True, **kwargs):
            x = self.patch(pixel_values)  # (images, C, h, w)
            x = x + self.pointwise(nn.functional.gelu(self.depthwise(x)))
            return BaseModelOutputWithPooling(last_hidden_state=x)

    AutoModel.register(StandInVisionConfig, StandInVisionTower, exist_ok=True)
    return StandInVisionConfig, StandInVisionTower


@register("test_stand_in", "gemma3n_vision")
def gemma3n_vision_stand_in(**kwargs):
    """A stand-in vision config for ``Gemma3nConfig(vision_config=...)`` from the spec's mapping (``hidden_size``,
    ``vocab_offset``, ``vocab_size`` as a Gemma3nVisionConfig has them; ``model_args.patch_size``)."""
    config_class, _ = _stand_in_classes()
    return config_class(**kwargs)


@register("test_inputs", "gemma3n")
def gemma3n_inputs(model, images_per_sample, text_lengths, gen):
    """(images, 3, H, W), each image ``vision_soft_tokens_per_image`` tokens between begin- and
    end-of-image tokens (token count from the model's own ``get_image_features``)."""
    from tokenprune.testing.families_more import Media, _count, _dtype, media_batch

    cfg = model.config
    images = torch.randn((sum(images_per_sample), 3, _SIDE, _SIDE), generator=gen).to(_dtype(model))
    special = {cfg.boi_token_id, cfg.eoi_token_id, cfg.boa_token_id, cfg.eoa_token_id, cfg.audio_token_id}
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]), special=special)
    features = model.model.get_image_features
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(features, {"pixel_values": images[i:i + 1]}))
