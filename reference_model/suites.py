"""The two synthetic VQA suites a reference model can be trained on, behind one interface for build.py,
train.py and aids.py: ``grid`` (48x48 images, 3x3 cells, 144 vision tokens; the shipped model) and ``photo``
(96x96 photo-like scenes, 576 vision tokens)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch


def import_synthvqa():
    """``tokenprune.synthvqa``; falls back to loading the folder on its own if the package cannot import."""
    try:
        from tokenprune import synthvqa
    except ImportError:
        import importlib.util

        path = Path(__file__).resolve().parent.parent / "tokenprune" / "synthvqa" / "__init__.py"
        spec = importlib.util.spec_from_file_location("synthvqa", path, submodule_search_locations=[str(path.parent)])
        synthvqa = importlib.util.module_from_spec(spec)
        sys.modules["synthvqa"] = synthvqa
        spec.loader.exec_module(synthvqa)
    return synthvqa


synthvqa = import_synthvqa()
photo = synthvqa.photo
PATCH_SIZE = 4


def _region_of_patch(side: int, per_region: int) -> torch.Tensor:
    """(side * side,) row-major index of the 3x3 region each patch lies in, patches in raster order."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return ((rows // per_region) * 3 + cols // per_region).flatten()


@dataclass(frozen=True)
class Suite:
    """What the training scripts need to know about a generator (sizes, samples, and the aids' targets)."""

    name: str
    image_size: int
    vision_layers: int
    max_positions: int

    @property
    def side(self) -> int:
        return self.image_size // PATCH_SIZE

    @property
    def num_image_tokens(self) -> int:
        return self.side**2

    @property
    def position_of_patch(self) -> torch.Tensor:
        """(N,) which of the 3x3 regions (grid cells or the photo's position words) each patch lies in."""
        return _region_of_patch(self.side, self.side // 3)

    num_positions = 9

    def glyph_targets(self, samples) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The glyph aid's targets for every sign on ``samples``: image index (S,), patches (S, N) bool, characters."""
        raise NotImplementedError(f"the {self.name!r} suite has no glyph aid targets (only 'photo' does)")


class GridSuite(Suite):
    question_types = synthvqa.QUESTION_TYPES
    patch_classes = tuple(["empty"] + [f"{c} {s}" for c in synthvqa.COLORS for s in synthvqa.SHAPES]
                          + [f"character {ch}" for ch in synthvqa.CHARACTERS])
    words = staticmethod(synthvqa.words)
    make_sample = staticmethod(synthvqa.make_sample)
    make_split = staticmethod(synthvqa.make_split)
    extra_questions = staticmethod(synthvqa.extra_questions)
    describe = staticmethod(synthvqa.describe)

    def patch_targets(self, samples) -> torch.Tensor:
        """(B, 144) class of the grid cell each patch lies in (an index into ``patch_classes``)."""
        targets = torch.zeros((len(samples), self.side, self.side), dtype=torch.long)
        per_cell = self.side // synthvqa.GRID
        for b, s in enumerate(samples):
            words = synthvqa.describe(s.scene)
            for cell in range(synthvqa.GRID**2):
                name = " ".join(words[2 * cell : 2 * cell + 2])
                r, c = divmod(cell, synthvqa.GRID)
                cls = 0 if name.startswith("empty") else self.patch_classes.index(name)
                targets[b, r * per_cell : (r + 1) * per_cell, c * per_cell : (c + 1) * per_cell] = cls
        return targets.flatten(1)

    def evidence_keys(self, sample, question) -> torch.Tensor:
        """(144,) bool: the patches of the cells the question is about."""
        keys = torch.zeros(self.num_image_tokens, dtype=torch.bool)
        keys[synthvqa.evidence_patches(sample.scene, question)] = True
        return keys


class PhotoSuite(Suite):
    question_types = photo.PHOTO_GENERATOR.types
    patch_classes = ("background", "distractor") + GridSuite.patch_classes[1:]
    words = staticmethod(photo.words)
    make_sample = staticmethod(photo.make_sample)
    make_split = staticmethod(photo.make_split)
    extra_questions = staticmethod(photo.extra_questions)
    describe = staticmethod(photo.describe)

    def patch_targets(self, samples) -> torch.Tensor:
        """(B, 576) what each patch shows: background, a distractor, or an object's class (the last drawn wins)."""
        targets = torch.zeros((len(samples), self.num_image_tokens), dtype=torch.long)
        for b, s in enumerate(samples):
            background = torch.tensor(photo.background_patches(s.scene), dtype=torch.long)
            targets[b] = 1
            targets[b, background] = 0
            for item in s.scene.items:
                name = f"{item.color} {item.shape}" if item.kind == "shape" else f"character {item.char}"
                targets[b, sorted(photo.item_patches(item))] = self.patch_classes.index(name)
        return targets

    def evidence_keys(self, sample, question) -> torch.Tensor:
        """(576,) bool: the patches of the objects the answer rests on."""
        keys = torch.zeros(self.num_image_tokens, dtype=torch.bool)
        keys[photo.evidence_patches(sample.scene, question)] = True
        return keys

    def glyph_targets(self, samples) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Every sign on ``samples``: its image (S,), the patches it is drawn on (S, 576) bool and its character."""
        which, chars, patches = [], [], []
        for b, s in enumerate(samples):
            for item in s.scene.glyphs:
                keys = torch.zeros(self.num_image_tokens, dtype=torch.bool)
                keys[sorted(photo.item_patches(item))] = True
                which.append(b), chars.append(item.char), patches.append(keys)
        if not patches:
            return torch.zeros(0, dtype=torch.long), torch.zeros((0, self.num_image_tokens), dtype=torch.bool), []
        return torch.tensor(which), torch.stack(patches), chars


SUITES: dict[str, Suite] = {
    "grid": GridSuite("grid", image_size=synthvqa.IMAGE_SIZE, vision_layers=2, max_positions=512),
    "photo": PhotoSuite("photo", image_size=photo.IMAGE_SIZE, vision_layers=2, max_positions=1024),
}
