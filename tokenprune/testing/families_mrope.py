"""Test-input builders for the mRoPE families beyond Qwen2-VL (kind ``test_inputs``).

All of them take patches with (t, h, w) grids like Qwen2-VL (see :func:`.families.qwen2_vl_inputs`); most
compute 3-D positions from ``mm_token_type_ids`` (the Qwen-Omni thinkers from the vision start tokens).
They differ in how a prompt lays out an image or a video (a ``layout`` function per family), in the shape
of a patch, and in the per-token inputs they need besides the prompt.
"""

from __future__ import annotations

import torch

from tokenprune.plugins import register

from .builders import TestBatch, left_pad, random_text
from .families import _qwen_pixel_kwargs, qwen2_vl_inputs

IMAGE_GRID = [1, 8, 8]  # (t, h, w) patches of a test image
VIDEO_GRID = [2, 4, 4]  # of a test video: two temporal patches


def _pack(items, patch_shape, gen, dtype):
    """Patches of ``items`` [(owner, grid)] in order, one row of ``patch_shape`` (an int: flattened) each,
    plus their grids and owners."""
    if not items:
        return {}
    grids = torch.tensor([g for _, g in items])
    shape = tuple(patch_shape) if isinstance(patch_shape, (tuple, list)) else (patch_shape,)
    pixels = torch.randn((int(grids.prod(dim=1).sum()), *shape), generator=gen).to(dtype)
    return {"grids": grids, "pixels": pixels, "owners": [o for o, _ in items]}


def _patch_dim(vis) -> int:
    return vis.in_channels * vis.temporal_patch_size * vis.patch_size * vis.patch_size


def _glm_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    """GLM-4.1V layout: an image is <begin_image> tokens <end_image>; a video is <begin_video>, then per
    temporal patch a frame <begin_image> tokens <end_image> followed by a timestamp (text), then <end_video>.
    Video frames use the *image* token and type 2 (the processor's ``create_mm_token_type_ids``)."""
    merge = cfg.vision_config.spatial_merge_size
    per_frame = grid[1] * grid[2] // (merge * merge)
    if not is_video:
        n = grid[0] * per_frame
        return ([cfg.image_start_token_id] + [cfg.image_token_id] * n + [cfg.image_end_token_id],
                [0] + [1] * n + [0])
    ids, kinds = [cfg.video_start_token_id], [0]
    for _ in range(grid[0]):
        stamp = random_text(1, vocab, avoid, gen)
        ids += [cfg.image_start_token_id] + [cfg.image_token_id] * per_frame + [cfg.image_end_token_id] + stamp
        kinds += [0] + [2] * per_frame + [0, 0]
    return ids + [cfg.video_end_token_id], kinds + [0]


def _glm_special(cfg) -> set[int]:
    names = ("image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id",
             "video_start_token_id", "video_end_token_id")
    return {getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None}


@register("test_inputs", "glm4v")
def glm4v_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """GLM-4.1V / 4.5V / 4.6V / GLM-OCR. Hugging Face finds video features with the image token too, so
    one forward call cannot carry both images and videos: a single-sample batch carries videos (each
    visual input of it), a larger batch carries images (several per sample, different counts)."""
    cfg = model.config
    kind = (lambda b, i: "video") if len(images_per_sample) == 1 else (lambda b, i: "image")
    return _framed_inputs(model, images_per_sample, text_lengths, gen, _glm_visual_tokens, kind,
                          _patch_dim(cfg.vision_config), _glm_special(cfg),
                          vision=lambda ids: ids == cfg.image_token_id)


def _edge_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    """Cosmos 3 Edge layout: <vision_start> tokens <vision_end> per image; per temporal patch of a video a
    timestamp (text) then <vision_start> video tokens <vision_end>."""
    merge = cfg.vision_config.spatial_merge_size
    per_frame = grid[1] * grid[2] // (merge * merge)
    if not is_video:
        n = grid[0] * per_frame
        return [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id], [0] + [1] * n + [0]
    ids, kinds = [], []
    for _ in range(grid[0]):
        ids += random_text(1, vocab, avoid, gen) + [cfg.vision_start_token_id] + [cfg.video_token_id] * per_frame
        ids += [cfg.vision_end_token_id]
        kinds += [0, 0] + [2] * per_frame + [0]
    return ids, kinds


@register("test_inputs", "cosmos3_edge")
def cosmos3_edge_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Cosmos 3 Edge: SigLIP-2 patches (channels x patch x patch, no temporal patch) with (t, h, w) grids;
    a sample's second visual input is a video (one timestamped segment per temporal patch)."""
    cfg = model.config
    vis = cfg.vision_config
    special = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}
    return _framed_inputs(model, images_per_sample, text_lengths, gen, _edge_visual_tokens,
                          lambda b, i: "video" if i % 2 == 1 else "image", vis.num_channels * vis.patch_size ** 2,
                          special, vision=lambda ids: (ids == cfg.image_token_id) | (ids == cfg.video_token_id))


def _start_end_visual_tokens(cfg, grid, is_video, gen, vocab, avoid):
    """<vision_start> image tokens <vision_end> (PaddleOCR-VL takes images only)."""
    n = grid[0] * grid[1] * grid[2] // (cfg.vision_config.spatial_merge_size ** 2)
    return [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id], [0] + [1] * n + [0]


@register("test_inputs", "paddleocr_vl")
def paddleocr_vl_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """PaddleOCR-VL: images as unflattened (channels, patch, patch) patches with (1, h, w) grids."""
    cfg = model.config
    vis = cfg.vision_config
    special = {cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}
    return _framed_inputs(model, images_per_sample, text_lengths, gen, _start_end_visual_tokens,
                          lambda b, i: "image", (vis.num_channels, vis.patch_size, vis.patch_size), special,
                          vision=lambda ids: ids == cfg.image_token_id)


def _framed_inputs(model, images_per_sample, text_lengths, gen, layout, kind_of, patch_shape, special, vision,
                   derived=None):
    """Prompts of text, visual inputs laid out by ``layout`` (``kind_of(b, i)``: image or video), text."""
    cfg = model.config
    vocab = cfg.text_config.vocab_size
    seqs, types, items = [], [], {"image": [], "video": []}
    for b, (n_vis, n_text) in enumerate(zip(images_per_sample, text_lengths)):
        head = random_text(max(1, n_text // 3), vocab, special, gen)
        tail = random_text(max(1, n_text - len(head)), vocab, special, gen)
        ids, kinds = list(head), [0] * len(head)
        for i in range(n_vis):
            kind = kind_of(b, i)
            grid = VIDEO_GRID if kind == "video" else IMAGE_GRID
            more_ids, more_kinds = layout(cfg, grid, kind == "video", gen, vocab, special)
            ids, kinds = ids + more_ids, kinds + more_kinds
            items[kind].append((b, grid))
        seqs.append(ids + tail)
        types.append(kinds + [0] * len(tail))
    dtype = next(model.parameters()).dtype
    packed = {kind: _pack(found, patch_shape, gen, dtype) for kind, found in items.items()}
    return _mrope_batch(cfg, seqs, types, packed, vision=vision, special=special, types_key="mm_token_type_ids",
                        derived=derived)


def _mrope_batch(cfg, seqs, types, packed, vision, special, types_key, derived=None) -> TestBatch:
    """Left-pad the prompts; ``split(b)`` gives sample ``b``'s own pixels and token types (batch invariance).

    ``derived``: more per-token inputs computed from the padded ids, ``{keyword: fn(ids) -> (B, S)}``."""
    ids, mask = left_pad(seqs, 0)
    token_types, _ = left_pad(types, 0)
    per_token = {types_key: token_types, **{key: fn(ids) for key, fn in (derived or {}).items()}}
    kwargs = {"input_ids": ids, "attention_mask": mask, **per_token}
    kwargs.update(_qwen_pixel_kwargs(packed, None))

    def split(b):
        real = mask[b].bool()
        return {**{key: value[b:b + 1, real] for key, value in per_token.items()}, **_qwen_pixel_kwargs(packed, b)}

    return TestBatch(kwargs=kwargs, vision_mask=vision(ids), image_token_id=cfg.image_token_id,
                     extra={"split": split}, vision_token_ids=sorted(special))


@register("test_inputs", "qwen_omni_thinker")
def qwen_omni_thinker_inputs(model, images_per_sample, text_lengths, gen) -> TestBatch:
    """Qwen2.5-Omni / Qwen3-Omni thinkers: the Qwen2-VL prompt layout (a sample's second visual input is a
    video), but 3-D positions come from the vision start tokens and no ``mm_token_type_ids`` is taken.
    Qwen3-Omni's videos need timestamps in the prompt, so its batches carry images only."""
    with_videos = getattr(model.config.vision_config, "deepstack_visual_indexes", None) is None
    batch = qwen2_vl_inputs(model, images_per_sample, text_lengths, gen, with_videos=with_videos)
    split = batch.extra["split"]

    def omni_kwargs(kwargs):
        out = {k: v for k, v in kwargs.items() if k != "mm_token_type_ids"}
        if "video_grid_thw" in out:  # seconds per temporal patch of each video (the temporal position step)
            out["video_second_per_grid"] = torch.ones(out["video_grid_thw"].shape[0])
        return out

    batch.kwargs = omni_kwargs(batch.kwargs)
    batch.extra["split"] = lambda b: omni_kwargs(split(b))
    return batch
