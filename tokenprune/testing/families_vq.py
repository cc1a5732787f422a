"""Registered test-input builders (kind ``test_inputs``) for Chameleon and Emu3, whose images become discrete
VQ-VAE codes mapped to ids of the text vocabulary.

In a prompt each image is a run of ``<image>`` placeholder ids (``config.image_token_id``, from
``vocabulary_map``); the model replaces their embeddings with the embeddings of the image's VQ token ids, which
is how Hugging Face's own ``get_placeholder_mask`` finds them. Random text and generation avoid the placeholder,
the VQ token ids and the image markers (``TestBatch.suppress_ids``: a random model must not start an
image).
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch
from .families_more import Media, _count, _dtype, media_batch


def _vq_ids(model) -> set[int]:
    """The placeholder and every VQ token id of the model's vocabulary mapping."""
    mapping = model.model.vocabulary_mapping
    return {mapping.image_token_id, *mapping.image_tokens}


def _vocab_ids(model, names) -> list[int]:
    vocab = model.config.vocabulary_map
    return [vocab[n] for n in names if n in vocab]


@register("test_inputs", "chameleon")
def chameleon_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Chameleon: (images, 3, H, W) at the VQ-VAE's resolution; an image becomes (H / 2^(levels-1))^2 VQ codes,
    between the processor's begin/end-of-image tokens (``<racm3:break>``, ``<eoss>``)."""
    cfg = model.config
    side = cfg.vq_config.resolution
    images = torch.randn((sum(images_per_sample), 3, side, side), generator=gen).to(_dtype(model))
    boi, eoi = _vocab_ids(model, ["<racm3:break>"]), _vocab_ids(model, ["<eoss>"])
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=(boi, eoi), special=_vq_ids(model))
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, {"pixel_values": images[i:i + 1]}))


@register("test_inputs", "emu3")
def emu3_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Emu3: (images, 3, H, W) padded to one size with ``image_sizes`` (height, width) per image; even images are
    square, odd ones half as wide. An image becomes h * (w + 1) tokens (h x w VQ codes, an end-of-line token per
    row), between ``<|image start|>`` ``<|image token|>`` and ``<|extra_201|>`` ``<|image end|>`` as its
    processor lays it out (the processor also spells the grid size, "h*w", after the start token)."""
    cfg = model.config
    side = 4 * 2 ** (len(cfg.vq_config.channel_multiplier) - 1)  # 4 x 4 codes for a square image
    total = sum(images_per_sample)
    sizes = torch.tensor([[side, side] if i % 2 == 0 else [side, side // 2] for i in range(total)])
    images = torch.zeros((total, 3, side, side), dtype=_dtype(model))
    for i, (h, w) in enumerate(sizes.tolist()):
        images[i, :, :h, :w] = torch.randn((3, h, w), generator=gen).to(images.dtype)
    before = _vocab_ids(model, ["<|image start|>", "<|image token|>"])
    after = _vocab_ids(model, ["<|extra_201|>", "<|image end|>"])
    eol = set(_vocab_ids(model, ["<|extra_200|>"]))
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx], "image_sizes": sizes[idx]},
                  image_token=cfg.image_token_id, wrap=(before, after), special=_vq_ids(model) | eol)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features,
                                        {"pixel_values": images[i:i + 1], "image_sizes": sizes[i:i + 1]}))
