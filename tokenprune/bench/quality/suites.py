"""The reference models' question suites: their splits and each question's evidence patches.

``grid``: the first reference model's 3x3 grids (``tokenprune.synthvqa``, 144 vision tokens); ``photo``: the
second one's photo-like scenes (``tokenprune.synthvqa.photo``, 576 vision tokens, mostly background).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenprune import synthvqa
from tokenprune.synthvqa.dataset import Sample


@dataclass(frozen=True)
class Suite:
    name: str
    make_split: Callable[..., list[Sample]]  # (split, n, seed) -> samples
    evidence: Callable[[Sample], list[int]]  # patch raster indices the sample's answer rests on
    checkpoint: Path  # the shipped model's folder, relative to the repository root
    description: str


SUITES: dict[str, Suite] = {
    "grid": Suite("grid", synthvqa.make_split, lambda s: synthvqa.evidence_patches(s.scene, s.question),
                  Path("reference_model/checkpoint"), "3x3 grids of shapes and characters, 144 vision tokens"),
    "photo": Suite("photo", synthvqa.photo.make_split, lambda s: synthvqa.photo.evidence_patches(s.scene, s.question),
                   Path("reference_model/photo/checkpoint"),
                   "photo-like scenes, mostly background, 576 vision tokens"),
}
