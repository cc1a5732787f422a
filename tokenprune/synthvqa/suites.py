"""The reference models' question suites: their generators, splits, image grids and each question's evidence.

``grid``: the first reference model's 3x3 grids (:mod:`tokenprune.synthvqa`, 144 vision tokens); ``photo``: the
second one's photo-like scenes (:mod:`tokenprune.synthvqa.photo`, 576 vision tokens, mostly background). The
benchmarks, the demo and the training recipe look a suite up here by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import dataset, grounding, photo, scene
from .dataset import Sample


@dataclass(frozen=True)
class Suite:
    name: str
    make_sample: Callable[..., Sample]  # (split, index, seed) -> sample; index mod 6 is the question type
    make_split: Callable[..., list[Sample]]  # (split, n, seed) -> samples
    evidence: Callable[[Sample], list[int]]  # patch raster indices the sample's answer rests on
    checkpoint: Path  # the shipped model's folder, relative to the repository root
    image_size: int  # pixels per side
    patches_per_side: int  # the vision tower's patch grid (one vision token per patch)
    description: str

    @property
    def num_vision_tokens(self) -> int:
        return self.patches_per_side ** 2


SUITES: dict[str, Suite] = {
    "grid": Suite("grid", dataset.make_sample, dataset.make_split,
                  lambda s: grounding.evidence_patches(s.scene, s.question), Path("reference_model/checkpoint"),
                  scene.IMAGE_SIZE, 12, "3x3 grids of shapes and characters, 144 vision tokens"),
    "photo": Suite("photo", photo.make_sample, photo.make_split,
                   lambda s: photo.evidence_patches(s.scene, s.question), Path("reference_model/photo/checkpoint"),
                   photo.IMAGE_SIZE, photo.PATCHES_PER_SIDE, "photo-like scenes, mostly background, 576 vision tokens"),
}
