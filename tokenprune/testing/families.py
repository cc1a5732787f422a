"""Registered test-input builders, one per pixel layout (kind ``test_inputs``)."""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch, left_pad, random_text


def _prompts(images_per_sample, text_lengths, tokens_per_image, image_id, vocab, gen, per_sample_counts=None,
             avoid=()):
    """Token lists: some text, then each image's tokens (one text token between images), then more text.

    ``tokens_per_image(i)`` gives the count of image ``i`` of a sample, or ``per_sample_counts[b][i]``.
    """
    avoid = {image_id, *avoid}
    seqs = []
    for b, (n_img, n_text) in enumerate(zip(images_per_sample, text_lengths)):
        count = (lambda i: per_sample_counts[b][i]) if per_sample_counts is not None else tokens_per_image
        head = random_text(max(1, n_text // 3), vocab, avoid, gen)
        tail = random_text(max(1, n_text - len(head)), vocab, avoid, gen)
        body = []
        for i in range(n_img):
            body += [image_id] * count(i)
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


def _llava_next_sizes(cfg) -> list[list[int]]:
    """Image sizes that land on different any-res grids, so samples carry different token counts."""
    side = cfg.vision_config.image_size
    return [[side, 2 * side], [2 * side, 2 * side], [side + side // 4, side]]


@register("test_inputs", "llava_next")
def anyres_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """LLaVA-NeXT / -NeXT-Video / -OneVision any-res: (patches, 3, H, W) per image; the token count depends on
    the image size, so it is counted with the model's own vision path."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    sizes = [_llava_next_sizes(cfg)[i % 3] for i in range(sum(images_per_sample))]
    patches = [image_size_to_num_patches(s, cfg.image_grid_pinpoints, side) for s in sizes]
    pixels = torch.zeros((len(sizes), max(patches), 3, side, side), dtype=dtype)
    for i, n in enumerate(patches):
        pixels[i, :n] = _pixels(n, 3, side, gen, dtype)
    image_sizes = torch.tensor(sizes)
    special = [i for i in (getattr(cfg, "video_token_id", None),) if i is not None]
    return _simple_images(model, images_per_sample, text_lengths, gen,
                          lambda idx: {"pixel_values": pixels[idx], "image_sizes": image_sizes[idx]},
                          special=special)


@register("test_inputs", "idefics3")
def idefics3_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Idefics2/3, SmolVLM: (B, images, 3, H, W) padded with all-zero images; pixel shuffle by scale_factor
    (Idefics3) or a perceiver resampler to a fixed number of latents (Idefics2)."""
    cfg = model.config
    side, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
    perceiver = getattr(cfg, "perceiver_config", None)  # Idefics2 resamples each image to a fixed count
    per_image = perceiver.resampler_n_latents if perceiver is not None else (side // patch) ** 2 // (cfg.scale_factor ** 2)
    dtype = next(model.parameters()).dtype
    pixels = torch.zeros((len(images_per_sample), max(images_per_sample), 3, side, side), dtype=dtype)
    for b, n in enumerate(images_per_sample):
        pixels[b, :n] = _pixels(n, 3, side, gen, dtype)
    seqs = _prompts(images_per_sample, text_lengths, lambda i: per_image, cfg.image_token_id,
                    cfg.text_config.vocab_size, gen)
    return _batch(model, seqs, {"pixel_values": pixels}, cfg.image_token_id,
                  split=lambda b: {"pixel_values": pixels[b:b + 1, :images_per_sample[b]]})


@register("test_inputs", "internvl")
def internvl_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """InternVL (HF-native): (images, 3, H, W); pixel shuffle by downsample_ratio."""
    cfg = model.config
    side, patch = cfg.vision_config.image_size[0], cfg.vision_config.patch_size[0]
    per_image = int((side // patch) ** 2 * cfg.downsample_ratio ** 2)
    dtype = next(model.parameters()).dtype
    pixels = _pixels(sum(images_per_sample), 3, side, gen, dtype)
    seqs = _prompts(images_per_sample, text_lengths, lambda i: per_image, cfg.image_token_id,
                    cfg.text_config.vocab_size, gen)
    ranges = _image_ranges(images_per_sample)
    return _batch(model, seqs, {"pixel_values": pixels}, cfg.image_token_id,
                  split=lambda b: {"pixel_values": pixels[ranges[b]]})


@register("test_inputs", "qwen2_vl")
def qwen2_vl_inputs(model, images_per_sample, text_lengths, gen, with_videos: bool = True) -> TestBatch:
    """Qwen2-VL family: flattened patches + (t, h, w) grids; a sample's second visual input is a video.

    ``mm_token_type_ids`` marks image (1) and video (2) tokens, as the processor does, for 3-D mRoPE.
    """
    cfg = model.config
    vis = cfg.vision_config
    merge, patch, temporal = vis.spatial_merge_size, vis.patch_size, vis.temporal_patch_size
    dim = vis.in_channels * temporal * patch * patch
    dtype = next(model.parameters()).dtype
    image_grid = [1, 8, 8]  # (t, h, w) patches
    video_grid = [2, 4, 4]
    seqs, types, images, videos, owners = [], [], [], [], []
    for b, (n_vis, n_text) in enumerate(zip(images_per_sample, text_lengths)):
        head = random_text(max(1, n_text // 3), cfg.text_config.vocab_size, _qwen_special(cfg), gen)
        tail = random_text(max(1, n_text - len(head)), cfg.text_config.vocab_size, _qwen_special(cfg), gen)
        ids, kinds = list(head), [0] * len(head)
        for i in range(n_vis):
            is_video = with_videos and i % 2 == 1
            grid = video_grid if is_video else image_grid
            count = grid[0] * grid[1] * grid[2] // (merge * merge)
            token, kind = (cfg.video_token_id, 2) if is_video else (cfg.image_token_id, 1)
            ids += [cfg.vision_start_token_id] + [token] * count + [cfg.vision_end_token_id]
            kinds += [0] + [kind] * count + [0]
            (videos if is_video else images).append((b, grid))
        seqs.append(ids + tail)
        types.append(kinds + [0] * len(tail))
        owners.append(b)
    ids, mask = left_pad(seqs, 0)
    mm_types, _ = left_pad(types, 0)

    def pack(items):
        if not items:
            return {}
        grids = torch.tensor([g for _, g in items])
        pixels = torch.randn((int(grids.prod(dim=1).sum()), dim), generator=gen).to(dtype)
        return {"grids": grids, "pixels": pixels, "owners": [o for o, _ in items]}

    packed = {"image": pack(images), "video": pack(videos)}
    kwargs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm_types}
    kwargs.update(_qwen_pixel_kwargs(packed, None))
    vision = (ids == cfg.image_token_id) | (ids == cfg.video_token_id)

    def split(b):
        real = mask[b].bool()
        return {"mm_token_type_ids": mm_types[b:b + 1, real], **_qwen_pixel_kwargs(packed, b)}

    return TestBatch(kwargs=kwargs, vision_mask=vision, image_token_id=cfg.image_token_id, extra={"split": split},
                     vision_token_ids=sorted(_qwen_special(cfg)))


@register("test_inputs", "qwen3_vl")
def qwen3_vl_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Qwen3-VL: as Qwen2-VL, images only (its processor lays video frames out with timestamps)."""
    return qwen2_vl_inputs(model, images_per_sample, text_lengths, gen, with_videos=False)


def _qwen_special(cfg) -> set[int]:
    return {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}


def _qwen_pixel_kwargs(packed, only_sample):
    out = {}
    for kind, pixel_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                      ("video", "pixel_values_videos", "video_grid_thw")):
        item = packed[kind]
        if not item:
            continue
        sizes = item["grids"].prod(dim=1).tolist()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        keep = [i for i, o in enumerate(item["owners"]) if only_sample is None or o == only_sample]
        if not keep:
            continue
        rows = torch.cat([torch.arange(starts[i], starts[i] + sizes[i]) for i in keep])
        out[pixel_key] = item["pixels"][rows]
        out[grid_key] = item["grids"][keep]
    return out


@register("test_inputs", "gemma3")
def gemma3_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Gemma3: (images, 3, H, W), ``mm_tokens_per_image`` tokens each, ``token_type_ids`` marking them
    (the multimodal model turns those into a bidirectional attention block per image)."""
    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    per_image = cfg.mm_tokens_per_image
    special = {cfg.image_token_id, cfg.boi_token_id, cfg.eoi_token_id}
    seqs = []
    for n_img, n_text in zip(images_per_sample, text_lengths):
        head = random_text(max(1, n_text // 3), cfg.text_config.vocab_size, special, gen)
        tail = random_text(max(1, n_text - len(head)), cfg.text_config.vocab_size, special, gen)
        body = []
        for _ in range(n_img):
            body += [cfg.boi_token_id] + [cfg.image_token_id] * per_image + [cfg.eoi_token_id]
        seqs.append(head + body + tail)
    pixels = _pixels(sum(images_per_sample), 3, side, gen, dtype)
    ranges = _image_ranges(images_per_sample)
    batch = _batch(model, seqs, {"pixel_values": pixels}, cfg.image_token_id,
                   split=lambda b: {"pixel_values": pixels[ranges[b]],
                                    "token_type_ids": (batch.input_ids[b:b + 1] == cfg.image_token_id).long()[
                                        :, batch.kwargs["attention_mask"][b].bool()]})
    batch.kwargs["token_type_ids"] = (batch.input_ids == cfg.image_token_id).long()
    batch.vision_token_ids = sorted(special)
    return batch


def _features_per_image(model, pixel_kwargs) -> list[int]:
    """Count each image's features with the model's own vision path (any-res and merge rules included)."""
    with torch.no_grad():
        out = model.model.get_image_features(**pixel_kwargs)
    feats = getattr(out, "pooler_output", out)
    if isinstance(feats, torch.Tensor):
        return [feats.shape[-2]] * feats.shape[0] if feats.dim() == 3 else [feats.shape[0]]
    return [f.shape[0] for f in feats]


def _simple_images(model, images_per_sample, text_lengths, gen, pixel_kwargs_for, extra=None, special=()):
    """Shared builder: pixel kwargs for all images, counts from the model, then prompts and splits."""
    cfg = model.config
    total = sum(images_per_sample)
    kwargs = pixel_kwargs_for(list(range(total)))
    counts = []
    for i in range(total):
        counts += _features_per_image(model, pixel_kwargs_for([i]))
    ranges = _image_ranges(images_per_sample)
    seqs = _prompts(images_per_sample, text_lengths, None, cfg.image_token_id, cfg.text_config.vocab_size, gen,
                    per_sample_counts=[counts[r] for r in ranges], avoid=special)
    batch = _batch(model, seqs, {**kwargs, **(extra or {})}, cfg.image_token_id,
                   split=lambda b: pixel_kwargs_for(list(range(ranges[b].start, ranges[b].stop))))
    batch.vision_token_ids = sorted({cfg.image_token_id, *special})
    return batch


@register("test_inputs", "pixtral")
def mistral3_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Mistral 3 (Pixtral tower): images of different sizes, spatial merge; counts come from the model."""
    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    shapes = [[side, side], [side, side // 2], [side // 2, side]]
    sizes = [shapes[i % 3] for i in range(sum(images_per_sample))]
    pixels = torch.zeros((len(sizes), 3, side, side), dtype=dtype)
    for i, (h, w) in enumerate(sizes):
        pixels[i, :, :h, :w] = torch.randn((3, h, w), generator=gen).to(dtype)
    image_sizes = torch.tensor(sizes)
    return _simple_images(model, images_per_sample, text_lengths, gen,
                          lambda idx: {"pixel_values": pixels[idx], "image_sizes": image_sizes[idx]})


@register("test_inputs", "square_images")
def square_image_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Families with fixed-size (images, 3, H, W) pixels (AyaVision, PaliGemma, ...); counts from the model."""
    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    pixels = _pixels(sum(images_per_sample), 3, side, gen, dtype)
    return _simple_images(model, images_per_sample, text_lengths, gen, lambda idx: {"pixel_values": pixels[idx]})


@register("test_inputs", "paligemma")
def paligemma_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """PaliGemma: the image tokens come first, then the prompt; ``token_type_ids`` 0 marks the prefix
    (image + prompt), which the multimodal model turns into a bidirectional block."""
    cfg = model.config
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    per_image = (side // cfg.vision_config.patch_size) ** 2
    avoid = {cfg.image_token_id}
    seqs = [[cfg.image_token_id] * per_image * n + random_text(t, cfg.text_config.vocab_size, avoid, gen)
            for n, t in zip(images_per_sample, text_lengths)]
    pixels = _pixels(sum(images_per_sample), 3, side, gen, dtype)
    ranges = _image_ranges(images_per_sample)
    batch = _batch(model, seqs, {"pixel_values": pixels}, cfg.image_token_id, split=None)
    batch.kwargs["token_type_ids"] = torch.zeros_like(batch.input_ids)

    def split(b):
        real = batch.kwargs["attention_mask"][b].bool()
        return {"pixel_values": pixels[ranges[b]], "token_type_ids": torch.zeros((1, int(real.sum())), dtype=torch.long)}

    batch.extra["split"] = split
    return batch
