"""The optional ``vision_side`` section of a model spec: where the vision tower's attention is and how its tokens
become the language model's vision tokens, for the selectors that read the vision encoder (VisionZip, FasterVLM,
grid downsampling).

A leaf module (pydantic only) so that :mod:`tokenprune.spec` can reference it without an import circle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VisionSide(_Strict):
    """The vision tower seen from the language model's vision tokens."""

    tower: str = Field(description="Dotted path (from the loaded model) of the vision tower: the module the "
                       "multimodal model calls once per batch of images (or of videos) with their pixels.")
    encoder_layers: str = Field(description="Dotted path, relative to the tower, of its list of encoder layers.")
    layer: int | str = Field(
        -1, description="Which encoder layer's attention is read: an index into encoder_layers (negative counts "
        "from the end), or a dotted reference into the model config whose value is a Hugging Face "
        "`vision_feature_layer` (an index into the tower's hidden states, whose entry 0 is the embeddings: -2 is "
        "the output of the penultimate layer). Default: the layer whose output feeds the projector.")
    attention: str = Field("self_attn", description="Path of the attention module, relative to an encoder layer.")
    reader: str = Field(
        "qk_proj", description="How the layer's attention probabilities are recomputed from its attention module's "
        "input (towers run sdpa/flash and return no weights): a `tower_reader` plug-in. 'qk_proj' (built in): "
        "separate q_proj/k_proj (optional q_norm/k_norm over the whole projection), num_heads and scale (CLIP, "
        "SigLIP, InternViT); the family module `qwen2_vl` registers 'qwen2_vl' (a fused qkv with the vision "
        "rotary embedding, attention within cu_seqlens blocks) and 'qwen2_5_vl' (the same inside the tower's "
        "window order, mapped back to the image's order).")
    cls_token: int | None = Field(None, description="Index of the [CLS] token in each image's tower sequence; "
                                  "null for towers without one (the score is then the mean attention over queries).")
    cls_in_features: str | None = Field(
        None, description="Dotted reference into the model config whose value 'full' means the [CLS] token is "
        "kept as a language-model vision token (Hugging Face `vision_feature_select_strategy`); otherwise it is "
        "dropped. Null: always dropped.")
    merge: int | str = Field(
        1, description="Patches per side merged into one language-model token (pixel shuffle, spatial merger): 1 "
        "for a 1:1 mapping, or a dotted config reference (e.g. 'vision_config.spatial_merge_size'; a value below 1 "
        "such as InternVL's downsample_ratio 0.5 is read as its inverse).")
    pooled_tokens: str | None = Field(
        None, description="For projectors that average-pool each image's square patch grid down to a fixed token "
        "count (Gemma 3's `mm_tokens_per_image`): a dotted config reference of that count, a square. The merge "
        "factor per side is then the patch grid's side over the count's square root, read from each tower call; "
        "the pooled blocks are merge x merge blocks of the row-major grid, as with merge_order 'blocks'. Excludes "
        "merge.")
    merge_order: Literal["blocks", "consecutive"] = Field(
        "blocks", description="Where a merged token's patches are in the tower sequence: 'blocks', a merge x merge "
        "block of the row-major patch grid (pixel shuffle); 'consecutive', merge**2 consecutive tower tokens "
        "(Qwen2-VL's merger).")
    grid: Literal["square", "grid_thw"] = Field(
        "square", description="Each image's patch grid: 'square', the square root of its patch count; 'grid_thw', "
        "the (t, h, w) rows of the tower's `grid_thw` argument (a video's frames are stacked as rows).")
    tiling: str = Field(
        "none", description="'none': one tower call per image, its tokens in order; else a `vision_tiling` plug-in. "
        "'anyres' (family module `llava_next`): LLaVA-NeXT's any-resolution layout. The tower runs once per crop (a base "
        "crop, then a grid of high-resolution crops, per image); the language model sees the base crop's patches, "
        "then the crop grid unpadded to the image's aspect ratio with a newline token ending each row "
        "(config image_grid_pinpoints, the call's image_sizes). Newline tokens score 0 (no tower attention).")
    token_ids: list[str] = Field(
        default_factory=list, description="For towers called once per modality (images, then videos): dotted "
        "config references of the vision token ids each call fills, in call order (the calls fill the ids present "
        "in the prompt, in this order). Empty: one call fills every vision token.")

    @model_validator(mode="after")
    def _one_merge_rule(self) -> VisionSide:
        if self.pooled_tokens is not None and (self.merge != 1 or self.merge_order != "blocks"):
            raise ValueError("vision_side.pooled_tokens fixes the merge from the patch grid: leave merge (1) and "
                             "merge_order ('blocks') at their defaults")
        return self
