"""Chameleon (spec ``chameleon``): tracing hints; test inputs for Chameleon and Emu3 (spec ``emu3``), whose images
both become discrete VQ-VAE codes mapped to ids of the text vocabulary.

Chameleon's text model is also its multimodal model.

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

Test inputs: in a prompt each image is a run of ``<image>`` placeholder ids (``config.image_token_id``, from
``vocabulary_map``); the model replaces their embeddings with the embeddings of the image's VQ token ids, which
is how Hugging Face's own ``get_placeholder_mask`` finds them. Random text and generation avoid the placeholder,
the VQ token ids and the image markers (``TestBatch.suppress_ids``: a random model must not start an
image).
"""

from __future__ import annotations

import torch

from tokenprune.errors import UnsupportedError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints import TracingHint


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


# ------------------------------------------------------------------ test inputs
def _vq_ids(model) -> set[int]:
    """The placeholder and every VQ token id of the model's vocabulary mapping."""
    mapping = model.model.vocabulary_mapping
    return {mapping.image_token_id, *mapping.image_tokens}


def _vocab_ids(model, names) -> list[int]:
    vocab = model.config.vocabulary_map
    return [vocab[n] for n in names if n in vocab]


@register("test_inputs", "chameleon")
def chameleon_inputs(model, images_per_sample, text_lengths, gen):
    """Chameleon: (images, 3, H, W) at the VQ-VAE's resolution; an image becomes (H / 2^(levels-1))^2 VQ codes,
    between the processor's begin/end-of-image tokens (``<racm3:break>``, ``<eoss>``)."""
    from tokenprune.testing.families_more import Media, _count, _dtype, media_batch

    cfg = model.config
    side = cfg.vq_config.resolution
    images = torch.randn((sum(images_per_sample), 3, side, side), generator=gen).to(_dtype(model))
    boi, eoi = _vocab_ids(model, ["<racm3:break>"]), _vocab_ids(model, ["<eoss>"])
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=(boi, eoi), special=_vq_ids(model))
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, {"pixel_values": images[i:i + 1]}))


@register("test_inputs", "emu3")
def emu3_inputs(model, images_per_sample, text_lengths, gen):
    """Emu3: (images, 3, H, W) padded to one size with ``image_sizes`` (height, width) per image; even images are
    square, odd ones half as wide. An image becomes h * (w + 1) tokens (h x w VQ codes, an end-of-line token per
    row), between ``<|image start|>`` ``<|image token|>`` and ``<|extra_201|>`` ``<|image end|>`` as its
    processor lays it out (the processor also spells the grid size, "h*w", after the start token)."""
    from tokenprune.testing.families_more import Media, _count, _dtype, media_batch

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
