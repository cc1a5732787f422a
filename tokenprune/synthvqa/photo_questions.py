"""Question askers for photo-like scenes. Objects sit anywhere, so a question names its object by attributes
that pick it out uniquely (its shape, size, colour) or by position words (the 3x3 region of the image holding
its centre), never by a grid cell.

Each ``ask_*`` returns ``(question, answer, evidence)`` — ``evidence`` the indices in ``scene.items`` of the
objects the answer rests on — or None when the scene cannot give ``target`` for that type.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from .photo_scene import PhotoItem, PhotoScene, region_of
from .questions import ANSWERS, QUESTION_TYPES

PHOTO_QUESTION_TYPES = QUESTION_TYPES  # color, shape, read: one small region; count, exist, relation: everywhere
PHOTO_ANSWERS = ANSWERS
SIZES = ("small", "medium", "large")
RELATION_MARGIN = 6.0  # px between centres along the asked axis: closer pairs are not asked about

QA = tuple[str, str, tuple[int, ...]]


def _unique(item: PhotoItem, pool: Iterable[PhotoItem], key: Callable[[PhotoItem], object]) -> bool:
    return sum(key(other) == key(item) for other in pool) == 1


def _names(item: PhotoItem, pool: list[PhotoItem], attributes: list[tuple[str, Callable]], noun: str) -> list[str]:
    """Ways to name ``item`` uniquely within ``pool``: "the <attribute words> <noun>" or "... at the <region>"."""
    def phrase(*parts: str) -> str:
        return " ".join(part for part in parts if part)

    names = [phrase("the", words, noun) for words, key in attributes if _unique(item, pool, key)]
    region = region_of(item)
    if region is not None:
        # Objects whose centre is in the region, or near its border, compete for the position words.
        nearby = [o for o in pool if region_of(o, margin=0.0) == region]
        words, key = attributes[0]
        if _unique(item, nearby, key):
            names.append(phrase("the", words, noun, "at the", region))
    return names


def _choose(options: list[tuple[str, int]], rng: random.Random, answer: str) -> QA | None:
    if not options:
        return None
    question, index = rng.choice(options)
    return question, answer, (index,)


def ask_color(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    shapes = scene.shapes
    options = []
    for i, it in enumerate(scene.items):
        if it.kind == "shape" and it.color == target:
            attrs = [(it.shape, lambda o: o.shape), (f"{it.size} {it.shape}", lambda o: (o.size, o.shape))]
            options += [(f"what color is {name}", i) for name in _names(it, shapes, attrs, "")]
    return _choose(options, rng, target)


def ask_shape(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    shapes = scene.shapes
    options = []
    for i, it in enumerate(scene.items):
        if it.kind == "shape" and it.shape == target:
            attrs = [(it.color, lambda o: o.color), (f"{it.size} {it.color}", lambda o: (o.size, o.color))]
            options += [(f"what shape is {name}", i) for name in _names(it, shapes, attrs, "object")]
    return _choose(options, rng, target)


def ask_read(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    glyphs = scene.glyphs
    options = []
    for i, it in enumerate(scene.items):
        if it.kind == "glyph" and it.char == target:
            attrs = [("", lambda o: True), (it.size, lambda o: o.size)]
            options += [(f"what character is on {name}", i) for name in _names(it, glyphs, attrs, "sign")]
    return _choose(options, rng, target)


def _matching(scene: PhotoScene, keep: Callable[[PhotoItem], bool]) -> tuple[int, ...]:
    return tuple(i for i, it in enumerate(scene.items) if it.kind == "shape" and keep(it))


def ask_count(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    k = int(target)
    asks = [(f"how many {c} shapes are there", lambda o, c=c: o.color == c) for c in ANSWERS["color"]]
    asks += [(f"how many {s}s are there", lambda o, s=s: o.shape == s) for s in ANSWERS["shape"]]
    asks += [(f"how many {z} shapes are there", lambda o, z=z: o.size == z) for z in SIZES]
    options = [(q, hits) for q, keep in asks if len(hits := _matching(scene, keep)) == k]
    if not options:
        return None
    question, hits = rng.choice(options)
    return question, target, hits


def ask_exist(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    present = {(it.color, it.shape) for it in scene.shapes}
    if target == "yes":
        options = sorted(present)
    else:
        colors, shapes = {c for c, _ in present}, {s for _, s in present}
        absent = [(c, s) for c in ANSWERS["color"] for s in ANSWERS["shape"] if (c, s) not in present]
        # Prefer hard negatives: the colour and the shape are both in the scene, just not together.
        hard = [(c, s) for c, s in absent if c in colors and s in shapes]
        options = hard if hard and rng.random() < 0.7 else absent
    if not options:
        return None
    color, shape = rng.choice(options)
    return f"is there a {color} {shape}", target, _matching(scene, lambda o: (o.color, o.shape) == (color, shape))


def ask_relation(scene: PhotoScene, target: str, rng: random.Random) -> QA | None:
    shapes = scene.shapes
    unique = [i for i, it in enumerate(scene.items)
              if it.kind == "shape" and _unique(it, shapes, lambda o: (o.color, o.shape))]
    relation = rng.choice(("left of", "above"))
    for rel in (relation, "above" if relation == "left of" else "left of"):
        axis = 0 if rel == "left of" else 1
        pairs = []
        for a in unique:
            for b in unique:
                gap = scene.items[b].center[axis] - scene.items[a].center[axis]
                if a != b and abs(gap) >= RELATION_MARGIN and (gap > 0) == (target == "yes"):
                    pairs.append((a, b))
        if pairs:
            a, b = rng.choice(pairs)
            first, second = scene.items[a], scene.items[b]
            question = f"is the {first.color} {first.shape} {rel} the {second.color} {second.shape}"
            return question, target, (a, b)
    return None


PHOTO_ASKERS: dict[str, Callable[[PhotoScene, str, random.Random], QA | None]] = {
    "color": ask_color,
    "shape": ask_shape,
    "count": ask_count,
    "exist": ask_exist,
    "relation": ask_relation,
    "read": ask_read,
}
