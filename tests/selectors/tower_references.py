"""References for the vision-encoder selectors, computed from each test model's own vision tower run with eager
attention weights: the score every language-model vision token should get, and each image's grid and token count."""

from __future__ import annotations

import math

import torch
import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen_modeling
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from .test_grid_anyres import anyres_layouts


def llava_tower_reference(case, batch):
    """Per image (N, P): [CLS] attention at the layer whose output feeds the projector, mean over heads."""
    eager = case.models["eager"]
    with torch.no_grad():
        out = eager.model.vision_tower(batch.kwargs["pixel_values"], output_attentions=True)
    hidden_index = eager.config.vision_feature_layer  # index into hidden_states, whose entry 0 is the embeddings
    layer = hidden_index - 1 if hidden_index >= 0 else len(out.attentions) + hidden_index
    weights = out.attentions[layer]  # (N, H, T, T)
    scores = weights[:, :, 0, 1:].mean(dim=1)  # (N, P): drop the [CLS] column, as the features do
    side = math.isqrt(scores.shape[1])
    return [scores.reshape(-1)], [[(side, side)] * scores.shape[0]], [[side * side] * scores.shape[0]]


def qwen_tower_reference(case, batch, monkeypatch):
    """Per image/video: attention each token receives summed over its queries / the image's token count, mean
    over heads, summed over each 2x2 merged unit. The tower is run in image order (window permutation off: the
    test tower's only block attends over whole images, so the order changes nothing) with eager weights."""
    eager = case.models["eager"]
    visual, merge = eager.model.visual, eager.config.vision_config.spatial_merge_size
    recorded = []
    plain = qwen_modeling.eager_attention_forward

    def recording(*args, **kwargs):
        out, weights = plain(*args, **kwargs)
        recorded.append(weights)  # (1, H, L, L) one block of cu_seqlens
        return out, weights

    def no_windows(grid_thw, spatial_merge_size, **_):
        units = int((grid_thw.prod(-1) // spatial_merge_size ** 2).sum())
        return torch.arange(units), torch.tensor([0, units * spatial_merge_size ** 2], dtype=torch.int32)

    monkeypatch.setattr(qwen_modeling, "eager_attention_forward", recording)
    monkeypatch.setattr(qwen_modeling, "get_vision_window_index", no_windows)
    scores, grids, counts = [], [], []
    for pixels, grid_thw in ((batch.kwargs.get("pixel_values"), batch.kwargs.get("image_grid_thw")),
                             (batch.kwargs.get("pixel_values_videos"), batch.kwargs.get("video_grid_thw"))):
        if pixels is None:
            continue
        recorded.clear()
        with torch.no_grad():
            visual(pixels, grid_thw=grid_thw)
        received = torch.cat([w[0].sum(dim=1).mean(dim=0) for w in recorded])  # (S,) over every block in order
        per_image = []
        for (t, h, w), part in zip(grid_thw.tolist(), received.split((grid_thw.prod(-1)).tolist())):
            per_image.append(part.reshape(-1, merge * merge).sum(dim=1) / (t * h * w))
            grids.append((t * h // merge, w // merge))
            counts.append(t * h * w // merge ** 2)
        scores.append(torch.cat(per_image))
    return scores, [grids], [counts]


def gemma3_tower_reference(case, batch):
    """Per image (N, P / k^2): attention each patch receives summed over every query / the patch count (no [CLS]),
    mean over heads, summed over each k x k block the model's own projector average-pools into one token."""
    eager = case.models["eager"]
    with torch.no_grad():
        weights = eager.model.vision_tower(batch.kwargs["pixel_values"], output_attentions=True).attentions[-1]
    scores = weights.sum(dim=2).mean(dim=1) / weights.shape[-1]  # (N, P)
    images, side = scores.shape[0], math.isqrt(scores.shape[1])
    pool = eager.model.multi_modal_projector.avg_pool
    pooled = pool(scores.reshape(images, 1, side, side)) * pool.kernel_size ** 2  # (N, 1, s, s) block sums
    rows = pooled.shape[-1]
    return [pooled.reshape(-1)], [[(rows, rows)] * images], [[rows * rows] * images]


def llava_next_tower_reference(case, batch):
    """Per image: [CLS] attention of each crop's patches (as for LLaVA), laid out by the model's own
    ``pack_image_features`` (base crop, unpadded crop grid, a newline after each row) with every feature channel
    holding the score and a zero newline embedding: newline tokens score 0."""
    eager = case.models["eager"]
    config, sizes = eager.config, batch.kwargs["image_sizes"]
    crops_per_image = [image_size_to_num_patches(size, config.image_grid_pinpoints, config.vision_config.image_size)
                       for size in sizes.tolist()]
    pixels = torch.cat([p[:n] for p, n in zip(batch.kwargs["pixel_values"], crops_per_image)])
    with torch.no_grad():
        attentions = eager.model.vision_tower(pixels, output_attentions=True).attentions
    hidden_index = config.vision_feature_layer  # hidden_states[h] is the output of layer h - 1
    weights = attentions[hidden_index - 1 if hidden_index >= 0 else len(attentions) + hidden_index]  # (crops, H, T, T)
    scores = weights[:, :, 0, 1:].mean(dim=1)  # (crops, P)
    width = config.text_config.hidden_size
    features = scores[..., None].expand(-1, -1, width).split(crops_per_image)  # per image (crops, P, D)
    packed, counts = eager.model.pack_image_features(list(features), sizes, config.vision_feature_select_strategy,
                                                     image_newline=torch.zeros(width))
    return [torch.cat(packed)[:, 0]], [anyres_layouts(eager, sizes)], [[int(c) for c in counts]]


def reference_at_prompt(case, batch, monkeypatch):
    """(B, S) reference attention at every vision position (0 elsewhere), images in the order they fill the prompt;
    and per image its grid and token count."""
    if case.spec.name in SINGLE_CALL_REFERENCES:
        tower = SINGLE_CALL_REFERENCES[case.spec.name]
        scores, grids, counts = tower(case, batch)
        masks = [batch.input_ids == batch.image_token_id]
    else:
        scores, grids, counts = qwen_tower_reference(case, batch, monkeypatch)
        ids = [case.models["eager"].config.image_token_id, case.models["eager"].config.video_token_id]
        masks = [batch.input_ids == i for i in ids if bool((batch.input_ids == i).any())]
    at = torch.zeros(batch.input_ids.shape)
    for mask, values in zip(masks, scores):
        at[mask] = values
    return at, [g for part in grids for g in part], [c for part in counts for c in part]


SINGLE_CALL_REFERENCES = {"llava": llava_tower_reference, "gemma3": gemma3_tower_reference,
                          "llava_next": llava_next_tower_reference}


def pixel_shuffle_reference(case, batch):
    """Per image, the tower attention summed over the patches the model's own pixel shuffle merges into each
    language-model token (InternVL: [CLS] attention; Idefics3: mean attention over queries)."""
    eager = case.models["eager"]
    pixels = batch.kwargs["pixel_values"]
    if case.spec.name == "internvl":
        with torch.no_grad():
            weights = eager.model.vision_tower(pixels, output_attentions=True).attentions[-1]  # (N, H, T, T)
        scores = weights[:, :, 0, 1:].mean(dim=1)  # (N, P)
        side = math.isqrt(scores.shape[1])
        merged = eager.model.pixel_shuffle(scores.reshape(-1, side, side, 1), eager.config.downsample_ratio)
    else:
        pixels = pixels.flatten(0, 1)
        pixels = pixels[pixels.flatten(1).abs().sum(dim=1) > 0]  # the model drops all-zero padding images
        with torch.no_grad():
            weights = eager.model.vision_model(pixels, output_attentions=True).attentions[-1]
        scores = weights.sum(dim=2).mean(dim=1) / weights.shape[-1]  # (N, P) mean over queries
        merged = eager.model.connector.pixel_shuffle(scores[:, :, None], eager.config.scale_factor)
    return merged.sum(dim=-1).reshape(-1)
