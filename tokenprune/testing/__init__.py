"""Tiny random models and inputs for the conformance suite and ``tokenprune validate`` (no downloads)."""

from .builders import TestBatch, build_test_model, make_test_inputs

__all__ = ["TestBatch", "build_test_model", "make_test_inputs"]

from . import families  # noqa: E402,F401  (registers the builders)
from . import families_mrope  # noqa: E402,F401  (registers builders for the mRoPE families: GLM-4V, Ernie, Omni, ...)
from . import families_more  # noqa: E402,F401  (registers more builders: videos, other pixel layouts)
from . import families_extra  # noqa: E402,F401  (registers builders for nested vision configs)
from . import families_muse  # noqa: E402,F401  (registers the Muse Glimmer / Muse Spark builder)
from . import families_gemma4_kosmos  # noqa: E402,F401  (registers the Gemma 4 and Kosmos-2 / 2.5 builders)
from . import families_llama4  # noqa: E402,F401  (registers the Llama 4 builder)
from . import families_timm  # noqa: E402,F401  (registers the FastVLM / PerceptionLM builders: timm towers stood in for)
from . import families_ocr2  # noqa: E402,F401  (registers the DeepSeek-OCR-2 builder)
from . import families_hunyuan  # noqa: E402,F401  (registers the HunYuanVL builder)
from . import families_mla  # noqa: E402,F401  (registers the Kimi-K2.5 and Fuyu builders: MLA and fused-QKV scoring)
from . import families_vq  # noqa: E402,F401  (registers the Chameleon and Emu3 builders)
from . import families_granite4v  # noqa: E402,F401  (registers the Granite 4 Vision builder: any-res tiles, Window Q-Former)
from . import families_gemma3n  # noqa: E402,F401  (registers the Gemma 3n builder and its stand-in vision tower)
from . import families_dsa  # noqa: E402,F401  (registers the Dots 3 Note builder: DeepSeek sparse attention)
from . import families_mistral_large4  # noqa: E402,F401  (registers the Mistral Large 4 test weights)
