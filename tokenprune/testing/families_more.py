"""More registered test-input builders (kind ``test_inputs``): families with videos or their own pixel layouts.

Most builders here share :func:`media_batch`: a sample's visual inputs alternate image, video, image, ...
(when the family takes videos), each input's token count comes from the model's own vision path, so
resampling, pooling and newline rules are never re-derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tokenprune.plugins import register

from .builders import TestBatch, left_pad, random_text


@dataclass
class Media:
    """How one family's images (and optionally videos) become model keyword arguments and tokens."""

    image_kwargs: Callable[[list[int]], dict]  # image indices -> pixel keyword arguments
    image_token: int
    video_kwargs: Callable[[list[int]], dict] | None = None  # video indices -> keyword arguments
    video_token: int | None = None
    wrap: tuple[list[int], list[int]] = ([], [])  # tokens before and after each visual input
    special: set[int] = field(default_factory=set)  # ids random text must avoid


def feature_count(output) -> int:
    """Number of feature vectors (rows of the last dim) a ``get_*_features`` call returned."""
    feats = getattr(output, "pooler_output", output)
    if isinstance(feats, torch.Tensor):
        return feats.numel() // feats.shape[-1]
    return sum(f.numel() // f.shape[-1] for f in feats)


def _count(fn, kwargs) -> int:
    with torch.no_grad():
        return feature_count(fn(**kwargs))


def media_batch(model, images_per_sample, text_lengths, gen, media: Media, count_image,
                count_video=None) -> TestBatch:
    """Left-padded prompts whose ``b``-th sample carries ``images_per_sample[b]`` visual inputs.

    Input ``i`` of a sample is a video when ``i`` is odd and the family takes videos (so ``batch3`` has one
    video and ``batch1`` none); ``count_image(i)`` / ``count_video(i)`` give each input's number of tokens.
    """
    vocab = model.config.get_text_config().vocab_size
    special = {media.image_token, *([media.video_token] if media.video_token is not None else []), *media.special,
               *media.wrap[0], *media.wrap[1]}
    seqs, owned = [], []  # owned[b] = (image indices, video indices) of sample b
    n_images = n_videos = 0
    for n_vis, n_text in zip(images_per_sample, text_lengths):
        head = random_text(max(1, n_text // 3), vocab, special, gen)
        tail = random_text(max(1, n_text - len(head)), vocab, special, gen)
        body, mine = [], ([], [])
        for i in range(n_vis):
            is_video = media.video_kwargs is not None and i % 2 == 1
            if is_video:
                token, count = media.video_token, count_video(n_videos)
                mine[1].append(n_videos)
                n_videos += 1
            else:
                token, count = media.image_token, count_image(n_images)
                mine[0].append(n_images)
                n_images += 1
            body += media.wrap[0] + [token] * count + media.wrap[1]
            if i + 1 < n_vis:
                body += random_text(1, vocab, special, gen)
        seqs.append(head + body + tail)
        owned.append(mine)
    ids, mask = left_pad(seqs, 0)

    def pixels(images, videos):
        out = dict(media.image_kwargs(images)) if images else {}
        if videos:
            out.update(media.video_kwargs(videos))
        return out

    kwargs = {"input_ids": ids, "attention_mask": mask, **pixels(list(range(n_images)), list(range(n_videos)))}
    vision_ids = sorted({media.image_token, *([media.video_token] if media.video_token is not None else [])})
    vision = torch.isin(ids, torch.tensor(vision_ids))

    return TestBatch(kwargs=kwargs, vision_mask=vision, image_token_id=media.image_token,
                     extra={"split": lambda b: pixels(*owned[b])},
                     vision_token_ids=sorted(special))


def _randn(shape, gen, dtype):
    return torch.randn(shape, generator=gen).to(dtype)


def _dtype(model):
    return next(model.parameters()).dtype


def _square_media(model, gen, n_images, n_videos, side, frames=2):
    """Fixed-size pixels: (n_images, 3, H, W) and (n_videos, frames, 3, H, W)."""
    dtype = _dtype(model)
    return _randn((n_images, 3, side, side), gen, dtype), _randn((n_videos, frames, 3, side, side), gen, dtype)


def _max_inputs(images_per_sample) -> int:
    return sum(images_per_sample)


@register("test_inputs", "video_llava")
def video_llava_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Video-LLaVA: (images, 3, H, W) without CLS; videos (videos, frames, 3, H, W) keep CLS per frame."""
    cfg = model.config
    total = _max_inputs(images_per_sample)
    images, videos = _square_media(model, gen, total, total, cfg.vision_config.image_size)
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  video_kwargs=lambda idx: {"pixel_values_videos": videos[idx]}, video_token=cfg.video_token_id)
    core = model.model
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(core.get_image_features, {"pixel_values": images[i:i + 1]}),
                       lambda i: _count(core.get_video_features, {"pixel_values_videos": videos[i:i + 1]}))


@register("test_inputs", "llava_next_video")
def anyres_video_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """LLaVA-NeXT-Video / -OneVision: any-res images (patches, 3, H, W) + ``image_sizes``, and videos
    (videos, frames, 3, H, W) pooled per frame by the model (OneVision adds a newline token per video)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    from .families import _llava_next_sizes

    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = _dtype(model)
    total = _max_inputs(images_per_sample)
    sizes = [_llava_next_sizes(cfg)[i % 3] for i in range(total)]
    patches = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, side) for s in sizes]
    pixels = torch.zeros((total, max(patches), 3, side, side), dtype=dtype)
    for i, n in enumerate(patches):
        pixels[i, :n] = _randn((n, 3, side, side), gen, dtype)
    image_sizes = torch.tensor(sizes)
    _, videos = _square_media(model, gen, 0, total, side)
    image_kwargs = lambda idx: {"pixel_values": pixels[idx], "image_sizes": image_sizes[idx]}  # noqa: E731
    video_kwargs = lambda idx: {"pixel_values_videos": videos[idx]}  # noqa: E731
    return _images_and_videos(model, images_per_sample, text_lengths, gen, image_kwargs, video_kwargs)


@register("test_inputs", "deepseek_vl_hybrid")
def deepseek_vl_hybrid_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """DeepSeek-VL hybrid: each image twice, low-res (SigLIP) and high-res (SAM); the SAM features are resized
    onto the SigLIP grid, so an image is (image_size / patch_size)^2 tokens."""
    cfg = model.config
    total = _max_inputs(images_per_sample)
    low, _ = _square_media(model, gen, total, 0, cfg.vision_config.image_size)
    high, _ = _square_media(model, gen, total, 0, cfg.high_res_vision_config.image_size)
    image_kwargs = lambda idx: {"pixel_values": low[idx], "high_res_pixel_values": high[idx]}  # noqa: E731
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, image_kwargs([i])))


@register("test_inputs", "ovis2")
def ovis2_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Ovis2: (images, 3, H, W); each image's tokens sit between visual indicator tokens (start, end), which
    the model embeds from its visual vocabulary and which stay text-like (never pruned)."""
    cfg = model.config
    total = _max_inputs(images_per_sample)
    images, _ = _square_media(model, gen, total, 0, cfg.vision_config.image_size)
    indicators = list(cfg.visual_indicator_token_ids)
    media = Media(image_kwargs=lambda idx: {"pixel_values": images[idx]}, image_token=cfg.image_token_id,
                  wrap=([indicators[0]], [indicators[1]]), special=set(indicators))
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(model.model.get_image_features, {"pixel_values": images[i:i + 1]}))


def _owners(images_per_sample) -> list[int]:
    """Sample index of each image, images numbered in sample order."""
    return [b for b, n in enumerate(images_per_sample) for _ in range(n)]


@register("test_inputs", "granite_docling")
def granite_docling_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """GraniteDocling: tiles (B, tiles, 3, H, W) padded per sample, ``pixel_attention_mask`` (B, tiles) marking
    real ones; each tile is ``image_seq_len`` tokens (pixel shuffle by scale_factor)."""
    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = _dtype(model)
    total = _max_inputs(images_per_sample)
    tiles, _ = _square_media(model, gen, total, 0, side)
    owners = _owners(images_per_sample)

    def image_kwargs(idx):
        groups = [[i for i in idx if owners[i] == b] for b in sorted({owners[i] for i in idx})]
        width = max(len(g) for g in groups)
        pixels = torch.zeros((len(groups), width, 3, side, side), dtype=dtype)
        real = torch.zeros((len(groups), width), dtype=torch.bool)
        for row, group in enumerate(groups):
            pixels[row, :len(group)] = tiles[group]
            real[row, :len(group)] = True
        return {"pixel_values": pixels, "pixel_attention_mask": real}

    count = lambda i: _count(model.model.get_image_features, image_kwargs([i]))  # noqa: E731
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id)
    return media_batch(model, images_per_sample, text_lengths, gen, media, count)


def _flat_patches(grids, dim, gen, dtype):
    """Packed patches of several (t, h, w) grids: (sum of t*h*w, dim), and each grid's row range."""
    sizes = [t * h * w for t, h, w in grids]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return _randn((sum(sizes), dim), gen, dtype), [slice(s, s + n) for s, n in zip(starts, sizes)]


def _packed_grid_inputs(model, images_per_sample, text_lengths, gen, dim, image_grids, video_grids) -> TestBatch:
    """Qwen-VL-style inputs: packed patches (pixel_values / pixel_values_videos, (N, dim)) with one (t, h, w)
    grid per input (image_grid_thw / video_grid_thw)."""
    images, image_rows = _flat_patches(image_grids, dim, gen, _dtype(model))
    videos, video_rows = _flat_patches(video_grids, dim, gen, _dtype(model))

    def packed(keys, pixels, rows, grids, idx):
        return {keys[0]: torch.cat([pixels[rows[i]] for i in idx]), keys[1]: torch.tensor([grids[i] for i in idx])}

    def image_kwargs(idx):
        return packed(("pixel_values", "image_grid_thw"), images, image_rows, image_grids, idx)

    def video_kwargs(idx):
        return packed(("pixel_values_videos", "video_grid_thw"), videos, video_rows, video_grids, idx)
    return _images_and_videos(model, images_per_sample, text_lengths, gen, image_kwargs, video_kwargs)


@register("test_inputs", "video_llama_3")
def video_llama3_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """VideoLLaMA3: packed patches (N, C*p*p) with (t, h, w) grids and a merge size per input (1 for images,
    2 for videos, as its processor does); an input is t*h*w / merge^2 tokens."""
    cfg = model.config
    vis = cfg.vision_config
    dim = vis.num_channels * vis.patch_size ** 2
    total = _max_inputs(images_per_sample)
    image_grids = [[1, 4, 4] if i % 2 == 0 else [1, 4, 6] for i in range(total)]  # two aspect ratios
    video_grids = [[2, 4, 4] for _ in range(total)]
    images, image_rows = _flat_patches(image_grids, dim, gen, _dtype(model))
    videos, video_rows = _flat_patches(video_grids, dim, gen, _dtype(model))

    def packed(prefix, pixels, rows, grids, merge, idx):
        return {prefix[0]: torch.cat([pixels[rows[i]] for i in idx]), prefix[1]: torch.tensor([grids[i] for i in idx]),
                prefix[2]: torch.tensor([merge] * len(idx))}

    image_kwargs = lambda idx: packed(("pixel_values", "image_grid_thw", "image_merge_sizes"),  # noqa: E731
                                      images, image_rows, image_grids, 1, idx)
    video_kwargs = lambda idx: packed(("pixel_values_videos", "video_grid_thw", "video_merge_sizes"),  # noqa: E731
                                      videos, video_rows, video_grids, 2, idx)
    return _images_and_videos(model, images_per_sample, text_lengths, gen, image_kwargs, video_kwargs)


@register("test_inputs", "qwen_vision_1d")
def qwen_vision_1d_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Qwen2.5-VL-style vision tower over packed patches (N, C*T*p*p) with (t, h, w) grids, in front of a text
    model with plain 1-D positions (HyperCLOVAX-SEED V2): an input is t*h*w / merge^2 tokens."""
    cfg = model.config
    vis = cfg.vision_config
    dim = vis.in_channels * vis.temporal_patch_size * vis.patch_size ** 2
    total = _max_inputs(images_per_sample)
    image_grids = [[1, 8, 8] if i % 2 == 0 else [1, 4, 8] for i in range(total)]  # two aspect ratios
    video_grids = [[2, 4, 4] for _ in range(total)]
    return _packed_grid_inputs(model, images_per_sample, text_lengths, gen, dim, image_grids, video_grids)


def _images_and_videos(model, images_per_sample, text_lengths, gen, image_kwargs, video_kwargs) -> TestBatch:
    """A batch of images and a video per sample, with token counts asked from the model's own feature methods."""
    cfg = model.config
    media = Media(image_kwargs=image_kwargs, image_token=cfg.image_token_id,
                  video_kwargs=video_kwargs, video_token=cfg.video_token_id)
    core = model.model
    return media_batch(model, images_per_sample, text_lengths, gen, media,
                       lambda i: _count(core.get_image_features, image_kwargs([i])),
                       lambda i: _count(core.get_video_features, video_kwargs([i])))
