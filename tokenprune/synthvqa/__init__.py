"""Synthetic visual question answering: seeded scenes of shapes and characters on a 3x3 grid; ``photo``: a
second generator of photo-like scenes (576 patches, mostly background).

Self-contained (PIL only); it imports nothing else from tokenprune.

>>> from tokenprune.synthvqa import make_sample
>>> s = make_sample("test", 0)
>>> s.prompt, s.answer   # doctest: +SKIP
('<image> what color is the object in row 2 column 1 ?', 'red')
"""

from . import photo
from .dataset import (
    BALANCED_BLOCK,
    DESCRIBE_QUESTION,
    IMAGE_TOKEN,
    SPLITS,
    Question,
    Sample,
    describe,
    extra_questions,
    make_sample,
    make_split,
    target_for,
)
from .glyphs import CHARACTERS
from .grounding import evidence_patches, relevant_cells
from .questions import ANSWERS, QUESTION_TYPES
from .scene import COLORS, GRID, IMAGE_SIZE, SHAPES, Item, Scene, random_scene, render
from .vocab import SPECIAL_TOKENS, words

__all__ = [
    "ANSWERS",
    "BALANCED_BLOCK",
    "CHARACTERS",
    "COLORS",
    "DESCRIBE_QUESTION",
    "GRID",
    "IMAGE_SIZE",
    "IMAGE_TOKEN",
    "QUESTION_TYPES",
    "SHAPES",
    "SPECIAL_TOKENS",
    "SPLITS",
    "Item",
    "Question",
    "Sample",
    "Scene",
    "describe",
    "evidence_patches",
    "extra_questions",
    "make_sample",
    "make_split",
    "photo",
    "random_scene",
    "relevant_cells",
    "render",
    "target_for",
    "words",
]
