"""Model shapes the benchmarks run on, and random-weight LLaVA models and prompts built from them.

Every preset is a LLaVA-1.5 layout (``LlavaForConditionalGeneration``) whose *language model* has the
benchmarked shape. The vision tower is a one-layer CLIP stand-in (hidden 64): pruning never touches it,
so its cost is kept negligible and the timings are those of the language model. An image of the
stand-in tower gives ``tokens_per_image`` vision tokens; larger vision-token counts (any-res, video) are
several images in one prompt, their tokens contiguous as in LLaVA-1.5.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

IMAGE_TOKEN_ID = 1000  # inside every preset's vocabulary, never produced by the text generator below
_PATCH = 4


@dataclass(frozen=True)
class Preset:
    """A benchmarked language-model shape and the prompt it is measured on."""

    name: str
    description: str
    text: dict  # LlamaConfig keyword arguments of the language model
    num_vision_tokens: int
    num_text_tokens: int
    tokens_per_image: int = 144
    decode_tokens: int = 16
    scaling: tuple[int, ...] = (144, 576, 2304, 4608)
    # Weights are only materialised where the preset is run; the CPU can only compile this shape.
    cpu_runnable: bool = True
    notes: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.text["num_hidden_layers"])

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "text": dict(self.text),
                "num_vision_tokens": self.num_vision_tokens, "num_text_tokens": self.num_text_tokens,
                "tokens_per_image": self.tokens_per_image, "decode_tokens": self.decode_tokens,
                "scaling": list(self.scaling)}


def _llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
           max_positions: int = 8192) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "max_position_embeddings": max_positions, "initializer_range": 0.02}


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "tiny test shape (8 layers, hidden 64): for tests of the engine, not for speed",
                   _llama(64, 112, 8, 4, 2, 1024, 2048), num_vision_tokens=144, num_text_tokens=16,
                   tokens_per_image=36, decode_tokens=4, scaling=(36, 72, 144)),
    "llama-12l": Preset("llama-12l", "12-layer Llama text model, hidden 1024, 16 heads, intermediate 2816",
                        _llama(1024, 2816, 12, 16, 16, 1024), num_vision_tokens=576, num_text_tokens=64),
    "llava-7b": Preset("llava-7b", "LLaVA-1.5-7B language-model shape: 32 layers, hidden 4096, 32 heads, "
                       "intermediate 11008, vocabulary 32064", _llama(4096, 11008, 32, 32, 32, 32064, 8192),
                       num_vision_tokens=576, num_text_tokens=64, decode_tokens=32, cpu_runnable=False),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown benchmark preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def llava_config(preset: Preset, num_layers: int | None = None, text_overrides: dict | None = None):
    """The ``LlavaConfig`` of a preset (optionally with fewer decoder layers, same width, or other overrides)."""
    from transformers import LlavaConfig

    text = copy.deepcopy(preset.text)
    if num_layers is not None:
        text["num_hidden_layers"] = num_layers
    text.update(text_overrides or {})
    side = _PATCH * math.isqrt(preset.tokens_per_image)
    if (side // _PATCH) ** 2 != preset.tokens_per_image:
        raise ValueError(f"tokens_per_image={preset.tokens_per_image} is not a square number of patches")
    vision = {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": side, "patch_size": _PATCH}
    return LlavaConfig(image_token_id=IMAGE_TOKEN_ID, vision_feature_layer=-1, text_config=text,
                       vision_config=vision)


def build_model(preset: Preset, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                attn_implementation: str = "sdpa", num_layers: int | None = None, seed: int = 0,
                text_overrides: dict | None = None):
    """A random-weight LLaVA model of the preset, in eval mode; ``device="meta"`` allocates no weights."""
    from transformers import LlavaForConditionalGeneration

    config = llava_config(preset, num_layers, text_overrides)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation,
                                                           dtype=dtype)
    return model.eval()


def build_eager_twin(model):
    """The same model under eager attention, sharing every parameter and buffer with ``model`` (no copy)."""
    from transformers import LlavaForConditionalGeneration

    config = copy.deepcopy(model.config)
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        twin = LlavaForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=dtype)
    pairs = list(zip(twin.named_modules(), model.named_modules()))
    for (name, mine), (src_name, src) in pairs:
        if name != src_name:
            raise RuntimeError(f"module trees differ at {name!r} / {src_name!r}")
        for key in list(mine._parameters):
            mine._parameters[key] = src._parameters[key]
        for key in list(mine._buffers):
            mine._buffers[key] = src._buffers[key]
    return twin.eval()


def make_inputs(model, preset: Preset, num_vision_tokens: int | None = None, num_text_tokens: int | None = None,
                device: str | torch.device = "cpu", seed: int = 0) -> tuple[dict, torch.Tensor]:
    """Keyword arguments for one prompt (text, every image's tokens, text) and its (1, S) vision mask."""
    n_vis = preset.num_vision_tokens if num_vision_tokens is None else num_vision_tokens
    n_text = preset.num_text_tokens if num_text_tokens is None else num_text_tokens
    if n_vis % preset.tokens_per_image:
        raise ValueError(f"{n_vis} vision tokens is not a multiple of {preset.tokens_per_image} per image")
    images = n_vis // preset.tokens_per_image
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    head = torch.randint(3, IMAGE_TOKEN_ID - 1, (n_text // 4,), generator=gen)
    tail = torch.randint(3, IMAGE_TOKEN_ID - 1, (n_text - n_text // 4,), generator=gen)
    ids = torch.cat([head, torch.full((n_vis,), IMAGE_TOKEN_ID), tail])[None]  # (1, S)
    side = cfg.vision_config.image_size
    dtype = next(model.parameters()).dtype
    pixels = torch.randn((images, 3, side, side), generator=gen).to(dtype)  # (images, 3, H, W)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    if images:
        inputs["pixel_values"] = pixels.to(device)
    return inputs, (ids == IMAGE_TOKEN_ID).to(device)
