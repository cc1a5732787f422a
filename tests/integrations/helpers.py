"""A LLaVA checkpoint directory with a processor: the trained reference model when it has been built,
otherwise an untrained stand-in with the same architecture, tokenizer and processor (reference_model/build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "reference_model" / "checkpoint"


def reference_ready() -> bool:
    return all((REFERENCE / name).is_file() for name in ("config.json", "model.safetensors", "processor_config.json"))


def llava_checkpoint(scratch: Path) -> Path:
    if reference_ready():
        return REFERENCE
    out = scratch / "untrained_reference"
    if not (out / "model.safetensors").is_file():
        sys.path.insert(0, str(ROOT / "reference_model"))
        try:
            import build
        finally:
            sys.path.remove(str(ROOT / "reference_model"))
        processor = build.build_processor()
        model = build.build_model(processor.tokenizer, seed=0)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out
