"""Tiny random models and inputs for the conformance suite and ``tokenprune validate`` (no downloads)."""

from .builders import TestBatch, build_test_model, make_test_inputs

__all__ = ["TestBatch", "build_test_model", "make_test_inputs"]

from . import families  # noqa: E402,F401  (registers the builders)
