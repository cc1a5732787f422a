"""Registered test-input builders, one per pixel layout (kind ``test_inputs``)."""

from __future__ import annotations

import torch

from tokenprune.registry import register

from .builders import TestBatch, left_pad, random_text


def _prompts(images_per_sample, text_lengths, tokens_per_image, image_id, vocab, gen, prefix=None, suffix=None):
    """Token lists: some text, then each image's tokens (wrapped by prefix/suffix ids), then the rest of the text."""
    avoid = {image_id}
    seqs = []
    for n_img, n_text in zip(images_per_sample, text_lengths):
        head = random_text(max(1, n_text // 3), vocab, avoid, gen)
        tail = random_text(max(1, n_text - len(head)), vocab, avoid, gen)
        body = []
        for i in range(n_img):
            body += (prefix or []) + [image_id] * tokens_per_image(i) + (suffix or [])
            if i + 1 < n_img:
                body += random_text(1, vocab, avoid, gen)
        seqs.append(head + body + tail)
    return seqs


def _batch(model, seqs, extra_kwargs, image_id, split=None) -> TestBatch:
    """``split(b)`` gives the pixel keyword arguments of sample ``b`` alone (batch-invariance tests)."""
    pad_id = 0
    ids, mask = left_pad(seqs, pad_id)
    kwargs = {"input_ids": ids, "attention_mask": mask, **extra_kwargs}
    extra = {"split": split} if split is not None else {}
    return TestBatch(kwargs=kwargs, vision_mask=ids == image_id, image_token_id=image_id, extra=extra)


def _image_ranges(images_per_sample) -> list[slice]:
    starts = [sum(images_per_sample[:b]) for b in range(len(images_per_sample))]
    return [slice(s, s + n) for s, n in zip(starts, images_per_sample)]


def _pixels(n, channels, size, gen, dtype):
    return (torch.randn((n, channels, size, size), generator=gen)).to(dtype)


@register("test_inputs", "llava")
def llava_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """LLaVA-1.5: one (3, H, W) image each, (H/p)^2 tokens (CLS dropped)."""
    cfg = model.config
    vis = cfg.vision_config
    per_image = (vis.image_size // vis.patch_size) ** 2
    per_image += 1 if cfg.vision_feature_select_strategy == "full" else 0
    image_id = cfg.image_token_id
    seqs = _prompts(images_per_sample, text_lengths, lambda i: per_image, image_id, cfg.text_config.vocab_size, gen)
    dtype = next(model.parameters()).dtype
    pixels = _pixels(sum(images_per_sample), 3, vis.image_size, gen, dtype)
    ranges = _image_ranges(images_per_sample)
    return _batch(model, seqs, {"pixel_values": pixels} if sum(images_per_sample) else {}, image_id,
                  split=lambda b: {"pixel_values": pixels[ranges[b]]})
