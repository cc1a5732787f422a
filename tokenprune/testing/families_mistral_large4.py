"""Registered test weights (kind ``test_weights``) and inputs (kind ``test_inputs``) for Mistral Large 4.

A fresh MistralLarge4 model initialises ``softmax_scaling`` (per head: ``scale * log(position_ids + 1) + bias``,
on the attention's and the indexer's queries) to scale 0 and bias 1, and the LeRoPE ``alpha`` of its rotary
module to 0: all identities. A scorer that forgot the scaling would then pass every test, so the test models
draw them at random (the same draw for every build with the same seed).
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families import mistral3_inputs


@register("test_weights", "mistral_large4")
def randomise_mistral_large4(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random per-head query scaling (scale in [-0.5, 0.5), bias in [0.5, 1.5)) and LeRoPE alpha, in module order."""
    from transformers.models.mistral_large4 import modeling_mistral_large4 as modeling

    for module in model.modules():
        if isinstance(module, modeling.MistralLarge4TextSoftmaxScaling):
            module.scale.copy_(torch.rand(module.scale.shape, generator=gen) - 0.5)
            module.bias.copy_(torch.rand(module.bias.shape, generator=gen) + 0.5)
        elif isinstance(module, modeling.MistralLarge4TextRotaryEmbedding):
            module.alpha.copy_((torch.rand(module.alpha.shape, generator=gen) - 0.5) * 0.2)


@register("test_inputs", "mistral_large4")
def mistral_large4_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Pixtral images (as for Mistral 3) plus explicit position ids that skip the left padding.

    The query scaling depends on absolute position ids, so Hugging Face's own model is batch invariant only
    when a padded sample's ids start at 0 after its padding: ``generate()`` derives them so from the mask, a
    plain ``forward()`` without ids would number the padding. The batch passes them as ``generate()`` would."""
    batch = mistral3_inputs(model, images_per_sample, text_lengths, gen)
    mask = batch.kwargs["attention_mask"]
    batch.kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, S)
    split = batch.extra["split"]
    real = mask.bool()

    def split_with_positions(b: int) -> dict:  # one sample without its padding: ids from 0
        return {**split(b), "position_ids": torch.arange(int(real[b].sum()))[None]}

    batch.extra["split"] = split_with_positions
    return batch
