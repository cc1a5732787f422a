"""Kosmos-2 and Kosmos-2.5 (specs ``kosmos2``, ``kosmos2_5``): tracing hints, locator and test inputs.

Their text transformers merge the image features themselves.

Their forward takes ``input_ids``, ``image_embeds`` and ``image_embeds_position_mask``: it embeds the ids,
scatters the image features into the rows the mask marks (an item assignment the trace cannot record), adds
sinusoidal positions computed from the ids (counting non-padding tokens only, offset by the padding id) and,
for Kosmos-2.5, a segment embedding read from the mask. The hint does the id-dependent part before the graph,
exactly as the forward would, and the traced root never receives ids or image features:

* ``inputs_embeds``: the token embeddings with the image features scattered in (unscaled: the traced forward
  scales them);
* ``text_position_ids``: the forward's position ids from the ids and the cache length, unless the caller
  passed its own (with embeddings only, the graph computes the forward's sequential ones);
* Kosmos-2.5: ``image_embeds_position_mask`` (zeros when absent, the same segment embedding as the forward's
  branch for an absent mask).

The vision tokens are the rows of the mask (locator ``kosmos2_image_mask``).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from tokenprune.errors import TraceError, UnsupportedError, describe
from tokenprune.plugins import register
from tokenprune.rewrites.hints import TracingHint
from tokenprune.rewrites.locators import call_arguments

_MASK = "image_embeds_position_mask"


def cache_length(cache, *args) -> int:
    """``cache.get_seq_length()``, 0 without a cache (the forward's ``... if past_key_values is not None else 0``,
    which the trace specialised to the cache placeholder)."""
    return 0 if cache is None else cache.get_seq_length(*args)


class _CacheProxy(fx.Proxy):
    """The cache placeholder: its ``get_seq_length()`` becomes a :func:`cache_length` node (None-safe)."""

    length_proxy = fx.Proxy

    def get_seq_length(self, *args):
        node = self.tracer.create_proxy("call_function", cache_length, (self, *args), {}).node
        return self.length_proxy(node, self.tracer)


class _ImageMergeHint(TracingHint):
    merges_on_continuation = True  # Kosmos-2 drops image inputs once the cache holds tokens, Kosmos-2.5 does not
    segment_input = False  # Kosmos-2.5: the mask is a graph input (segment embedding)
    cache_proxy = _CacheProxy

    def placeholder_proxy(self, tracer, node, variant):
        return self.cache_proxy(node, tracer) if node.target == "past_key_values" else None

    def input_names(self, variant):
        names = ("inputs_embeds", "attention_mask", "text_position_ids", "past_key_values")
        return names + ((_MASK,) if self.segment_input else ())

    def inner_kwargs(self, inputs, variant):
        out = {k: v for k, v in inputs.items() if k != "text_position_ids"}
        out["position_ids"] = inputs["text_position_ids"]
        return out

    def consume(self, extra, params):
        params["text_position_ids"] = params.get("position_ids")  # the caller's, before defaults are filled

    def prepare(self, lm, params, past_len):
        ids = params.get("input_ids")
        if params.get("text_position_ids") is None and ids is not None:
            table = lm.embed_positions
            positions = table.create_position_ids_from_input_ids(ids, table.padding_idx, past_len)  # (B, S)
            params["text_position_ids"] = positions.to(ids.device)
        image = params.get("image_embeds")
        if image is not None and (self.merges_on_continuation or past_len == 0):
            embeds = params["inputs_embeds"].clone()  # (B, S, D)
            rows = self.image_rows(params[_MASK])  # (B, S) bool
            embeds[rows] = image.to(embeds.device, embeds.dtype).view(-1, image.shape[-1])
            params["inputs_embeds"] = embeds
        if self.segment_input and params.get(_MASK) is None:
            params[_MASK] = torch.zeros(params["inputs_embeds"].shape[:2], dtype=torch.long,
                                        device=params["inputs_embeds"].device)

    def image_rows(self, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def graph_inputs(self, params, variant):
        out = {"text_position_ids": params.get("text_position_ids")}
        if self.segment_input:
            out[_MASK] = params[_MASK]
        return out


class _StaticPastLength(fx.Proxy):
    """The cache length, whose first ``> 0`` comparison is answered False at trace time (see :class:`Kosmos2`);
    any other comparison is refused."""

    answered = False

    def __gt__(self, other):
        if other == 0 and not self.answered:
            self.answered = True
            return False
        raise TraceError(describe(f"a trace-time comparison of the cache length with {other!r}", "hint kosmos2",
                                  "only the forward's `past_key_values_length > 0` (image inputs dropped)"))


class _StaticLengthCacheProxy(_CacheProxy):
    length_proxy = _StaticPastLength


@register("tracing_hint", "kosmos2")
class Kosmos2(_ImageMergeHint):
    """Kosmos-2 (``Kosmos2TextTransformer``): the image merge described above, done only when the cache is
    empty (as the forward does). The forward branches on ``past_key_values_length > 0`` to drop the image
    inputs; the traced root never passes them, so that branch is a no-op and is answered statically. The
    decoder mask builder (``_prepare_decoder_attention_mask``, which branches on lengths and uses no module
    state) is an opaque node. Its layers take the mask as their second positional argument
    (``tracing.layer_args: [mask]``)."""

    name = "kosmos2"
    merges_on_continuation = False
    leaf_methods = ("_prepare_decoder_attention_mask",)
    cache_proxy = _StaticLengthCacheProxy

    def image_rows(self, mask):
        return mask.to(dtype=torch.bool)


@register("tracing_hint", "kosmos2_5")
class Kosmos2_5(_ImageMergeHint):
    """Kosmos-2.5 (``Kosmos2_5TextTransformer``): the image merge described above (whenever image features are
    given, as the forward does), plus the segment embedding from ``image_embeds_position_mask``, a placeholder."""

    name = "kosmos2_5"
    segment_input = True

    def image_rows(self, mask):
        return mask == 1


# ------------------------------------------------------------------ locator

@register("locator", "kosmos2_image_mask")
def kosmos2_image_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The text model scatters the image features where ``image_embeds_position_mask``
    is 1; those slots hold an ordinary token id (the BOS id), so no config token id marks them. A call without
    the mask (a cached decode step, a text-only prompt) has no vision tokens."""
    bound = call_arguments(module, args, kwargs)
    mask, ids = bound.get(_MASK), bound.get("input_ids")
    reference = ids if ids is not None else bound.get("inputs_embeds")
    if mask is None:
        return None if reference is None else torch.zeros(reference.shape[:2], dtype=torch.bool,
                                                           device=reference.device)
    if reference is not None and tuple(mask.shape) != tuple(reference.shape[:2]):
        raise UnsupportedError(describe(
            f"image_embeds_position_mask of shape {tuple(mask.shape)} for {tuple(reference.shape[:2])} input positions",
            "locator kosmos2_image_mask", "one mask value per input position"))
    return mask != 0


# ------------------------------------------------------------------ test inputs
def _kosmos_batch(model, images_per_sample, text_lengths, gen, pixel_key: str, pixels: torch.Tensor):
    """One image per sample (the text model scatters (B, latent_query_num, D) features into the rows of
    ``image_embeds_position_mask``); its slots hold the BOS id, as the processors write them. Left-padded with the
    pad id, which the text model's positions skip (so a sample's prefill does not depend on its padding)."""
    from tokenprune.testing.builders import TestBatch, left_pad, random_text

    if any(n != 1 for n in images_per_sample):
        raise ValueError(f"Kosmos test prompts carry exactly one image each, got {images_per_sample}")
    cfg = model.config
    text = cfg.text_config
    per_image = cfg.latent_query_num
    special = {text.bos_token_id, text.pad_token_id, text.eos_token_id}
    seqs, slots = [], []
    for n_text in text_lengths:
        head = random_text(max(1, n_text // 3), text.vocab_size, special, gen)
        tail = random_text(max(1, n_text - len(head)), text.vocab_size, special, gen)
        seqs.append(head + [text.bos_token_id] * per_image + tail)
        slots.append([0] * len(head) + [1] * per_image + [0] * len(tail))
    ids, attention = left_pad(seqs, text.pad_token_id)
    mask, _ = left_pad(slots, 0)  # (B, S) 1 at the image rows
    real = attention.bool()
    kwargs = {"input_ids": ids, "attention_mask": attention, pixel_key: pixels, _MASK: mask}
    return TestBatch(kwargs=kwargs, vision_mask=mask.bool(), image_token_id=text.bos_token_id,
                     extra={"split": lambda b: {pixel_key: pixels[b:b + 1], _MASK: mask[b:b + 1, real[b]]}},
                     vision_token_ids=[text.bos_token_id])


@register("test_inputs", "kosmos2")
def kosmos2_inputs(model, images_per_sample, text_lengths, gen):
    """Kosmos-2: one (3, H, W) image per sample, resampled to ``latent_query_num`` tokens."""
    from tokenprune.testing.families_more import _dtype

    vis = model.config.vision_config
    pixels = torch.randn((len(text_lengths), 3, vis.image_size, vis.image_size), generator=gen).to(_dtype(model))
    return _kosmos_batch(model, images_per_sample, text_lengths, gen, "pixel_values", pixels)


@register("test_inputs", "kosmos2_5")
def kosmos2_5_inputs(model, images_per_sample, text_lengths, gen):
    """Kosmos-2.5: Pix2Struct-style ``flattened_patches`` (B, patches, 2 + patch_dim): row and column index,
    then the patch pixels; resampled to ``latent_query_num`` tokens."""
    from tokenprune.testing.families_more import _dtype

    vis = model.config.vision_config
    rows, cols = 4, 4
    index = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1).view(-1, 2)
    patches = torch.randn((len(text_lengths), rows * cols, vis.patch_embed_hidden_size), generator=gen)
    flat = torch.cat([index.float().expand(len(text_lengths), -1, -1), patches], dim=-1).to(_dtype(model))
    return _kosmos_batch(model, images_per_sample, text_lengths, gen, "flattened_patches", flat)
