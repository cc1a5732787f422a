"""An independent re-derivation of each answer from the scene, written against the question text only."""

from __future__ import annotations

import re


def _find(scene, color, shape):
    return [it for it in scene.shapes if it.color == color and it.shape == shape]


def _cell(scene, row, col):
    hits = [it for it in scene.items if it.row == row and it.col == col]
    assert len(hits) == 1, f"no single item in row {row} column {col}"
    return hits[0]


def answer(scene, question: str) -> str:
    m = re.fullmatch(r"what (color|shape) is the object in row (\d) column (\d)", question)
    if m:
        item = _cell(scene, int(m[2]), int(m[3]))
        assert item.kind == "shape"
        return item.color if m[1] == "color" else item.shape
    m = re.fullmatch(r"what character is in row (\d) column (\d)", question)
    if m:
        item = _cell(scene, int(m[1]), int(m[2]))
        assert item.kind == "glyph"
        return item.char
    m = re.fullmatch(r"how many (\w+) shapes are there", question)
    if m:
        return str(sum(it.color == m[1] for it in scene.shapes))
    m = re.fullmatch(r"how many (\w+)s are there", question)
    if m:
        return str(sum(it.shape == m[1] for it in scene.shapes))
    m = re.fullmatch(r"is there a (\w+) (\w+)", question)
    if m:
        return "yes" if _find(scene, m[1], m[2]) else "no"
    m = re.fullmatch(r"is the (\w+) (\w+) (left of|above) the (\w+) (\w+)", question)
    if m:
        (a,), (b,) = _find(scene, m[1], m[2]), _find(scene, m[4], m[5])  # each must be unique
        if m[3] == "left of":
            assert a.col != b.col
            return "yes" if a.col < b.col else "no"
        assert a.row != b.row
        return "yes" if a.row < b.row else "no"
    raise AssertionError(f"unrecognised question {question!r}")
