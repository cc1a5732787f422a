"""Gemma 3n test models: a stand-in for its timm vision tower (kind ``test_stand_in``) and its input builder
(kind ``test_inputs``).

Gemma 3n's checkpoints use a timm MobileNetV5 tower (``TimmWrapperModel``). timm cannot be installed in CI (it
needs torchvision, whose PyPI wheel for our torch is built against CUDA torch), and unlike FastVLM's or
PerceptionLM's, Gemma 3n's config pins its ``vision_config`` to ``Gemma3nVisionConfig`` (a dict is always read
as one, whatever its ``model_type``), so no transformers tower can stand in through the config alone. The
stand-in is a ``Gemma3nVisionConfig`` subclass of its own model type, built by the
``stand_ins`` of the spec's test data, whose model is a tiny convolutional tower with the timm tower's output layout:
(images, hidden_size, h, w), flattened by Gemma 3n's own ``get_image_features`` to h * w soft tokens.
tokenprune works on the text model after the features are merged, which is Gemma 3n's own.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from tokenprune.registry import register

from .builders import TestBatch
from .families_more import Media, _count, _dtype, media_batch

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
def gemma3n_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Gemma 3n: (images, 3, H, W), each image ``vision_soft_tokens_per_image`` tokens between begin- and
    end-of-image tokens (token count from the model's own ``get_image_features``)."""
    cfg = model.config
    images = torch.randn((sum(images_per_sample), 3, _SIDE, _SIDE), generator=gen).to(_dtype(model))
    special = {cfg.boi_token_id, cfg.eoi_token_id, cfg.boa_token_id, cfg.eoa_token_id, cfg.audio_token_id}
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=([cfg.boi_token_id], [cfg.eoi_token_id]), special=special)
    features = model.model.get_image_features
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(features, {"pixel_values": images[i:i + 1]}))
