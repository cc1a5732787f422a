"""Seeded, random-access splits of the 3x3-grid generator (drawing machinery: ``sampling.py``).

Sample ``i`` of a split depends only on ``(split, seed, i)``: question type ``i mod 6`` and, within a type,
the answers cycle through that type's answer list, so any prefix of ``6 * 24 * k`` samples is exactly
balanced per type and per answer.
"""

from __future__ import annotations

from .questions import ANSWERS, ASKERS, QUESTION_TYPES
from .sampling import IMAGE_TOKEN, SPLITS, Generator, Question, Sample
from .scene import GRID, Scene, random_scene, render

__all__ = ["BALANCED_BLOCK", "GRID_GENERATOR", "IMAGE_TOKEN", "SPLITS", "Question", "Sample", "describe",
           "extra_questions", "make_sample", "make_split", "target_for"]

BALANCED_BLOCK = len(QUESTION_TYPES) * 24  # 24 = lcm of the answer-list lengths (4, 3, 4, 2, 2, 8)
GRID_GENERATOR = Generator("synthvqa", QUESTION_TYPES, ANSWERS, random_scene, ASKERS, render)


def target_for(index: int) -> tuple[str, str]:
    """The (question type, answer) that sample ``index`` of any split is built to have."""
    return GRID_GENERATOR.target_for(index)


def make_sample(split: str, index: int, seed: int = 0) -> Sample:
    """Sample ``index`` of ``split``: a scene drawn until it can answer the target question, then rendered."""
    return GRID_GENERATOR.make_sample(split, index, seed)


def extra_questions(
    sample: Sample, count: int, seed: int = 0, types: tuple[str, ...] = QUESTION_TYPES
) -> list[Question]:
    """Up to ``count`` more distinct questions about the same image (for training several at once), of the
    given ``types`` (all by default)."""
    return GRID_GENERATOR.extra_questions(sample, count, seed, types)


DESCRIBE_QUESTION = "describe"


def describe(scene: Scene) -> list[str]:
    """A dense description of the scene (a training target, not a question type): two words per cell in
    reading order: ``color shape``, ``character X`` or ``empty empty``."""
    at = {(it.row, it.col): it for it in scene.items}
    words: list[str] = []
    for row in range(1, GRID + 1):
        for col in range(1, GRID + 1):
            item = at.get((row, col))
            if item is None:
                words += ["empty", "empty"]
            elif item.kind == "shape":
                words += [item.color, item.shape]
            else:
                words += ["character", item.char]
    return words


def make_split(split: str, n: int, seed: int = 0, start: int = 0) -> list[Sample]:
    return GRID_GENERATOR.make_split(split, n, seed, start)
