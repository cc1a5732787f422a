"""An independent re-derivation of each photo-suite answer from the scene, written against the question text."""

from __future__ import annotations

import re

REGIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]


def _region(item) -> str:
    cx, cy = item.left + (item.width - 1) / 2, item.top + (item.height - 1) / 2
    return REGIONS[min(2, int(cy // 32)) * 3 + min(2, int(cx // 32))]


def _one(items):
    assert len(items) == 1, f"{len(items)} objects fit the description"
    return items[0]


def _pick(scene, words: str, pool):
    """The single object of ``pool`` that "the <words>" names (attributes, then an optional region)."""
    m = re.fullmatch(r"(.*?)(?: at the (.+))?", words)
    attrs, region = m[1].split(), m[2]
    hits = [it for it in pool if all(a in (it.size, it.color, it.shape) for a in attrs)]
    if region is not None:
        hits = [it for it in hits if _region(it) == region]
    return _one(hits)


def answer(scene, question: str) -> str:
    shapes = scene.shapes
    m = re.fullmatch(r"what color is the (.+)", question)
    if m:
        return _pick(scene, m[1], shapes).color
    m = re.fullmatch(r"what shape is the (.+?) object( at the .+)?", question)
    if m:
        return _pick(scene, m[1] + (m[2] or ""), shapes).shape
    m = re.fullmatch(r"what character is on the (?:(small|large) )?sign(?: at the (.+))?", question)
    if m:
        hits = [g for g in scene.glyphs if m[1] in (None, g.size) and m[2] in (None, _region(g))]
        return _one(hits).char
    m = re.fullmatch(r"how many (\w+) shapes are there", question)
    if m:
        return str(sum(m[1] in (it.color, it.size) for it in shapes))
    m = re.fullmatch(r"how many (\w+)s are there", question)
    if m:
        return str(sum(it.shape == m[1] for it in shapes))
    m = re.fullmatch(r"is there a (\w+) (\w+)", question)
    if m:
        return "yes" if any((it.color, it.shape) == (m[1], m[2]) for it in shapes) else "no"
    m = re.fullmatch(r"is the (\w+) (\w+) (left of|above) the (\w+) (\w+)", question)
    if m:
        a = _one([it for it in shapes if (it.color, it.shape) == (m[1], m[2])])
        b = _one([it for it in shapes if (it.color, it.shape) == (m[4], m[5])])
        axis = 0 if m[3] == "left of" else 1
        gap = (b.left + b.width / 2, b.top + b.height / 2)[axis] - (a.left + a.width / 2, a.top + a.height / 2)[axis]
        assert abs(gap) >= 4, "objects too close to tell"
        return "yes" if gap > 0 else "no"
    raise AssertionError(f"unrecognised question {question!r}")
