"""Question types. Each ``ask_*`` tries to pose a question about a scene whose answer is ``target``.

It returns ``(question, answer)`` or ``None`` when the scene cannot give that answer for that type; the
dataset then draws another scene. Asking for a chosen answer is what makes the answers balanced.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from .glyphs import CHARACTERS
from .scene import COLORS, SHAPES, Item, Scene

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exist", "relation", "read")
COUNT_ANSWERS: tuple[str, ...] = ("0", "1", "2", "3")
YES_NO: tuple[str, ...] = ("yes", "no")

ANSWERS: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "count": COUNT_ANSWERS,
    "exist": YES_NO,
    "relation": YES_NO,
    "read": CHARACTERS,
}

QA = tuple[str, str]


def _at(item: Item) -> str:
    return f"in row {item.row} column {item.col}"


def ask_color(scene: Scene, target: str, rng: random.Random) -> QA | None:
    options = [it for it in scene.shapes if it.color == target]
    if not options:
        return None
    return f"what color is the object {_at(rng.choice(options))}", target


def ask_shape(scene: Scene, target: str, rng: random.Random) -> QA | None:
    options = [it for it in scene.shapes if it.shape == target]
    if not options:
        return None
    return f"what shape is the object {_at(rng.choice(options))}", target


def ask_count(scene: Scene, target: str, rng: random.Random) -> QA | None:
    k = int(target)
    by_color = Counter(it.color for it in scene.shapes)
    by_shape = Counter(it.shape for it in scene.shapes)
    options = [f"how many {c} shapes are there" for c in COLORS if by_color[c] == k]
    options += [f"how many {s}s are there" for s in SHAPES if by_shape[s] == k]
    if not options:
        return None
    return rng.choice(options), target


def ask_exist(scene: Scene, target: str, rng: random.Random) -> QA | None:
    present = {(it.color, it.shape) for it in scene.shapes}
    if target == "yes":
        options = sorted(present)
    else:
        colors = {c for c, _ in present}
        shapes = {s for _, s in present}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        # Prefer hard negatives: the colour and the shape are both in the scene, just not together.
        hard = [(c, s) for c, s in absent if c in colors and s in shapes]
        options = hard if hard and rng.random() < 0.7 else absent
    if not options:
        return None
    color, shape = rng.choice(options)
    return f"is there a {color} {shape}", target


def ask_relation(scene: Scene, target: str, rng: random.Random) -> QA | None:
    combos = Counter((it.color, it.shape) for it in scene.shapes)
    unique = [it for it in scene.shapes if combos[(it.color, it.shape)] == 1]
    relation = rng.choice(("left of", "above"))
    order = [relation, "above" if relation == "left of" else "left of"]
    for rel in order:
        pairs = []
        for a in unique:
            for b in unique:
                if a is b:
                    continue
                if rel == "left of" and a.col != b.col:
                    holds = a.col < b.col
                elif rel == "above" and a.row != b.row:
                    holds = a.row < b.row
                else:
                    continue
                if holds == (target == "yes"):
                    pairs.append((a, b))
        if pairs:
            a, b = rng.choice(pairs)
            return f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}", target
    return None


def ask_read(scene: Scene, target: str, rng: random.Random) -> QA | None:
    options = [it for it in scene.glyphs if it.char == target]
    if not options:
        return None
    return f"what character is {_at(rng.choice(options))}", target


ASKERS: dict[str, Callable[[Scene, str, random.Random], QA | None]] = {
    "color": ask_color,
    "shape": ask_shape,
    "count": ask_count,
    "exist": ask_exist,
    "relation": ask_relation,
    "read": ask_read,
}
