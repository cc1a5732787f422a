"""Builders for the reference model's tokenizer, processor and (untrained) model. Used by train.py."""

from __future__ import annotations

import torch
from suites import PATCH_SIZE, SUITES, Suite, synthvqa
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

GRID = SUITES["grid"]
IMAGE_SIZE = GRID.image_size  # 48 -> 12 x 12 = 144 patches
NUM_IMAGE_TOKENS = GRID.num_image_tokens
CELL_OF_PATCH = GRID.position_of_patch  # (144,) grid cell (row-major, 0..8) of each patch in raster order
PROJECTOR_OUT_SCALE = 0.5


def build_tokenizer(suite: Suite = GRID) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the suite's vocabulary; prepends <s>; pads on the left."""
    vocab = {tok: i for i, tok in enumerate(list(synthvqa.SPECIAL_TOKENS) + suite.words())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )
    return tok


def build_processor(suite: Suite = GRID) -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": suite.image_size},
        crop_size={"height": suite.image_size, "width": suite.image_size},
        do_resize=True,
        do_center_crop=True,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(suite),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",  # drops CLS: one image token per patch
        num_additional_image_tokens=1,  # the CLS token of the CLIP tower
        image_token="<image>",
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast, seed: int, text_hidden: int = 128, text_intermediate: int = 384,
    suite: Suite = GRID,
) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=suite.vision_layers,
        num_attention_heads=4,
        image_size=suite.image_size,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_act="quick_gelu",
        initializer_range=0.02,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=text_intermediate,
        num_hidden_layers=12,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=suite.max_positions,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    # The CLIP tower's last hidden states are not normalised: with the default init the projected image tokens
    # enter the language model larger than the text embeddings (and grow ~20x in training), and training stalled
    # at the text-only prior in a first attempt.
    # Start the projector's output at the scale of the text embeddings instead.
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.mul_(PROJECTOR_OUT_SCALE)
    return model
