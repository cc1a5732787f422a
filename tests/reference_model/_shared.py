"""Paths, the held-out size and the evaluation script shared by the reference-model tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tokenprune import synthvqa

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "reference_model" / "checkpoint"
NUM_IMAGE_TOKENS = 144
HELD_OUT = 2 * synthvqa.BALANCED_BLOCK  # 288 test-split samples, balanced per type and answer


def _load_evaluate():
    spec = importlib.util.spec_from_file_location("reference_model_evaluate", ROOT / "reference_model" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


evaluate = _load_evaluate()
