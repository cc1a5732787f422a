"""Tiny random models and inputs for the conformance suite and ``tokenprune validate`` (no downloads).

Builders shared by several families are registered here; a family plug-in module (``model_specs/<family>.py``)
registers its own.
"""

from .builders import TestBatch, build_test_model, make_test_inputs

__all__ = ["TestBatch", "build_test_model", "make_test_inputs"]

from . import families  # noqa: E402,F401  (registers the builders)
from . import families_mrope  # noqa: E402,F401  (registers builders for the mRoPE families: GLM-4V, Omni, ...)
from . import families_more  # noqa: E402,F401  (registers more builders: videos, other pixel layouts)
from . import families_extra  # noqa: E402,F401  (registers builders for nested vision configs)
from . import families_muse  # noqa: E402,F401  (registers the Muse Glimmer / Muse Spark builder)
from . import families_timm  # noqa: E402,F401  (registers the FastVLM / PerceptionLM builders: timm towers stood in for)
from . import families_ocr2  # noqa: E402,F401  (registers the DeepSeek-OCR-2 builder)
from . import families_mla  # noqa: E402,F401  (registers the Kimi-K2.5 and Fuyu builders: MLA and fused-QKV scoring)
