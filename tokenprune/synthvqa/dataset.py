"""Seeded, random-access splits of the synthetic VQA suite.

Sample ``i`` of a split depends only on ``(split, seed, i)``: question type ``i mod 6`` and, within a type,
the answers cycle through that type's answer list, so any prefix of ``6 * 24 * k`` samples is exactly
balanced per type and per answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from .questions import ANSWERS, ASKERS, QUESTION_TYPES
from .scene import GRID, Scene, random_scene, render

SPLITS: dict[str, int] = {"train": 0, "calibration": 1, "test": 2}
IMAGE_TOKEN = "<image>"
BALANCED_BLOCK = len(QUESTION_TYPES) * 24  # 24 = lcm of the answer-list lengths (4, 3, 4, 2, 2, 8)


@dataclass(frozen=True)
class Question:
    qtype: str
    question: str
    answer: str

    @property
    def prompt(self) -> str:
        """The text given to the model; the answer is the next token after it."""
        return f"{IMAGE_TOKEN} {self.question} ?"


@dataclass(frozen=True)
class Sample:
    split: str
    index: int
    scene: Scene
    image: Image.Image
    question: Question

    @property
    def prompt(self) -> str:
        return self.question.prompt

    @property
    def answer(self) -> str:
        return self.question.answer

    @property
    def qtype(self) -> str:
        return self.question.qtype


def _rng(split: str, seed: int, index: int, salt: str = "") -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return random.Random(f"synthvqa/{split}/{SPLITS[split]}/{seed}/{index}{salt}")


def target_for(index: int) -> tuple[str, str]:
    """The (question type, answer) that sample ``index`` of any split is built to have."""
    qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    answers = ANSWERS[qtype]
    return qtype, answers[(index // len(QUESTION_TYPES)) % len(answers)]


def make_sample(split: str, index: int, seed: int = 0) -> Sample:
    """Sample ``index`` of ``split``: a scene drawn until it can answer the target question, then rendered."""
    qtype, target = target_for(index)
    rng = _rng(split, seed, index)
    for _ in range(10_000):
        scene = random_scene(rng)
        qa = ASKERS[qtype](scene, target, rng)
        if qa is not None:
            question = Question(qtype, qa[0], qa[1])
            return Sample(split, index, scene, render(scene, rng), question)
    raise RuntimeError(f"could not build a {qtype!r} question with answer {target!r}")  # pragma: no cover


def extra_questions(
    sample: Sample, count: int, seed: int = 0, types: tuple[str, ...] = QUESTION_TYPES
) -> list[Question]:
    """Up to ``count`` more distinct questions about the same image (for training several at once), of the
    given ``types`` (all by default)."""
    rng = _rng(sample.split, seed, sample.index, salt="/extra")
    seen = {sample.question.question}
    out: list[Question] = []
    for _ in range(count * 8):
        if len(out) == count:
            break
        qtype = rng.choice(types)
        qa = ASKERS[qtype](sample.scene, rng.choice(ANSWERS[qtype]), rng)
        if qa is not None and qa[0] not in seen:
            seen.add(qa[0])
            out.append(Question(qtype, qa[0], qa[1]))
    return out


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
    return [make_sample(split, i, seed) for i in range(start, start + n)]
