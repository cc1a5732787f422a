"""Which grid cells a question is about (its grounding), read back from the question's words.

Used by training aids that supervise *where* the model looks (e.g. an attention target over the image
patches of those cells). A "no" existence answer or a count of 0 is about no cell: the list is empty.
"""

from __future__ import annotations

from .dataset import Question
from .scene import CELL, COLORS, GRID, Scene

Cell = tuple[int, int]  # (row, column), 1-based
PATCH = 4  # pixels per patch side of the reference model's vision tower: 12x12 = 144 patches


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


def evidence_patches(scene: Scene, question: Question, patch: int = PATCH) -> list[int]:
    """Raster indices (row * 12 + column at the default 4-pixel patch) of the patches of ``question``'s
    :func:`relevant_cells` (every patch of a cell counts: a cell's content is drawn anywhere inside it).

    The grid suite's counterpart of ``synthvqa.photo.evidence_patches``; empty for an answer resting on an
    absence."""
    if CELL % patch:
        raise ValueError(f"evidence_patches: patch={patch} does not divide the {CELL}-pixel cells; expected a "
                         "divisor of 16 (the reference model uses 4)")
    per_cell, side = CELL // patch, GRID * CELL // patch
    patches: set[int] = set()
    for row, col in relevant_cells(scene, question):
        top, left = (row - 1) * per_cell, (col - 1) * per_cell
        patches |= {(top + r) * side + left + c for r in range(per_cell) for c in range(per_cell)}
    return sorted(patches)
