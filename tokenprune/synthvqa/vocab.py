"""Every word the suite can produce, for building a word-level tokenizer."""

from __future__ import annotations

from .glyphs import CHARACTERS
from .questions import COUNT_ANSWERS, YES_NO
from .scene import COLORS, GRID, SHAPES

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>")

_TEMPLATE_WORDS = (
    "what color is the object in row column shape how many shapes are there "
    "is there a left of above character ? describe empty"
).split()


def words() -> list[str]:
    """The suite's vocabulary (no special tokens), in a fixed order without duplicates."""
    pool = list(_TEMPLATE_WORDS)
    pool += [str(i) for i in range(1, GRID + 1)]
    pool += list(COLORS) + list(SHAPES) + [f"{s}s" for s in SHAPES]
    pool += list(COUNT_ANSWERS) + list(YES_NO) + list(CHARACTERS)
    seen: dict[str, None] = {}
    for w in pool:
        seen.setdefault(w, None)
    return list(seen)
