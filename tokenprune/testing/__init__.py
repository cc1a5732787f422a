"""Tiny random models and inputs for the conformance suite and ``tokenprune validate`` (no downloads)."""

from .builders import TestBatch, build_test_model, make_test_inputs

__all__ = ["TestBatch", "build_test_model", "make_test_inputs"]

from . import families  # noqa: E402,F401  (registers the builders)
from . import families_mrope  # noqa: E402,F401  (registers builders for the mRoPE families: GLM-4V, Ernie, Omni, ...)
from . import families_more  # noqa: E402,F401  (registers more builders: videos, other pixel layouts)
from . import families_extra  # noqa: E402,F401  (registers builders for nested vision configs)
