"""Which grid cells a question is about (its grounding), read back from the question's words.

Used by training aids that supervise *where* the model looks (e.g. an attention target over the image
patches of those cells). A "no" existence answer or a count of 0 is about no cell: the list is empty.
"""

from __future__ import annotations

from .dataset import Question
from .scene import COLORS, Scene

Cell = tuple[int, int]  # (row, column), 1-based


def relevant_cells(scene: Scene, question: Question) -> list[Cell]:
    """The cells whose content decides the answer of ``question`` about ``scene``."""
    words = question.question.split()
    shapes = scene.shapes
    if question.qtype in ("color", "shape", "read"):
        return [(int(words[words.index("row") + 1]), int(words[words.index("column") + 1]))]
    if question.qtype == "count":  # "how many <colour> shapes are there" / "how many <shape>s are there"
        key = words[2]
        if key in COLORS:
            return [(it.row, it.col) for it in shapes if it.color == key]
        return [(it.row, it.col) for it in shapes if f"{it.shape}s" == key]
    if question.qtype == "exist":  # "is there a <colour> <shape>"
        wanted = (words[3], words[4])
        return [(it.row, it.col) for it in shapes if (it.color, it.shape) == wanted]
    if question.qtype == "relation":  # "is the <c1> <s1> <left of|above> the <c2> <s2>"
        pair = {(words[2], words[3]), (words[-2], words[-1])}
        return [(it.row, it.col) for it in shapes if (it.color, it.shape) in pair]
    raise ValueError(f"relevant_cells: unknown question type {question.qtype!r}; expected one of "
                     "color, shape, count, exist, relation, read")
