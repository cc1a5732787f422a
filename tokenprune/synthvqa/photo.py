"""The photo-like generator: seeded train / calibration / test splits of 96x96 scenes (24x24 = 576 patches of
4x4 pixels, LLaVA-1.5's vision-token count) that are mostly background, with the patches of each question's
evidence as ground truth.

>>> from tokenprune.synthvqa import photo
>>> s = photo.make_sample("test", 0)
>>> s.prompt, s.answer, photo.evidence_patches(s.scene, s.question)[:3]   # doctest: +SKIP
('<image> what color is the large circle ?', 'red', [27, 28, 29])
"""

from __future__ import annotations

from dataclasses import dataclass

from .glyphs import CHARACTERS
from .photo_questions import PHOTO_ANSWERS, PHOTO_ASKERS, PHOTO_QUESTION_TYPES, SIZES
from .photo_scene import (
    IMAGE_SIZE,
    NUM_PATCHES,
    PATCH,
    PATCHES_PER_SIDE,
    REGION_NAMES,
    PhotoScene,
    background_patches,
    item_patches,
    random_photo_scene,
    render_photo,
)
from .questions import COUNT_ANSWERS, YES_NO
from .sampling import Generator, Question, Sample
from .scene import COLORS, SHAPES

__all__ = ["BALANCED_BLOCK", "IMAGE_SIZE", "NUM_PATCHES", "PATCH", "PATCHES_PER_SIDE", "PHOTO_GENERATOR",
           "PhotoQuestion", "background_patches", "describe", "evidence_patches", "extra_questions",
           "make_sample", "make_split", "words"]

BALANCED_BLOCK = len(PHOTO_QUESTION_TYPES) * 24  # 24 = lcm of the answer-list lengths (4, 3, 4, 2, 2, 8)


@dataclass(frozen=True)
class PhotoQuestion(Question):
    evidence: tuple[int, ...] = ()  # indices in scene.items of the objects the answer rests on


PHOTO_GENERATOR = Generator("synthvqa-photo", PHOTO_QUESTION_TYPES, PHOTO_ANSWERS, random_photo_scene,
                            PHOTO_ASKERS, render_photo, PhotoQuestion)


def make_sample(split: str, index: int, seed: int = 0) -> Sample:
    """Sample ``index`` of ``split`` (type ``index mod 6``; answers cycle within a type, as in the grid suite)."""
    return PHOTO_GENERATOR.make_sample(split, index, seed)


def make_split(split: str, n: int, seed: int = 0, start: int = 0) -> list[Sample]:
    return PHOTO_GENERATOR.make_split(split, n, seed, start)


def extra_questions(sample: Sample, count: int, seed: int = 0,
                    types: tuple[str, ...] = PHOTO_QUESTION_TYPES) -> list[PhotoQuestion]:
    """Up to ``count`` more distinct questions about the same image, of the given ``types``."""
    return PHOTO_GENERATOR.extra_questions(sample, count, seed, types)


def evidence_patches(scene: PhotoScene, question: PhotoQuestion) -> list[int]:
    """Raster indices (row * 24 + column) of the patches the objects of ``question``'s answer are drawn on.

    Empty when the answer rests on an absence ("no" to ``is there a ...``, a count of 0).
    """
    if not isinstance(question, PhotoQuestion):
        raise TypeError(f"evidence_patches: got a {type(question).__name__}; expected a PhotoQuestion from "
                        "tokenprune.synthvqa.photo (grid-suite questions: use synthvqa.relevant_cells)")
    patches: set[int] = set()
    for index in question.evidence:
        patches |= item_patches(scene.items[index])
    return sorted(patches)


DESCRIBE_QUESTION = "describe"


def describe(scene: PhotoScene) -> list[str]:
    """A dense description (a training target, not a question type): two words per object, top to bottom then
    left to right by centre: ``color shape`` or ``character X``."""
    order = sorted(scene.items, key=lambda it: (it.center[1], it.center[0]))
    out: list[str] = []
    for it in order:
        out += [it.color, it.shape] if it.kind == "shape" else ["character", it.char]
    return out


_TEMPLATE_WORDS = ["what", "color", "is", "the", "shape", "object", "how", "many", "shapes", "are", "there", "is", "there", "a", "left", "of", "above", "character", "on", "sign", "at", "?", "describe"]


def words() -> list[str]:
    """The generator's vocabulary (no special tokens), in a fixed order without duplicates."""
    pool = list(_TEMPLATE_WORDS) + [w for name in REGION_NAMES for w in name.split()] + list(SIZES)
    pool += list(COLORS) + list(SHAPES) + [f"{s}s" for s in SHAPES]
    pool += list(COUNT_ANSWERS) + list(YES_NO) + list(CHARACTERS)
    return list(dict.fromkeys(pool))
