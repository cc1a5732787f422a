"""Seeded, random-access sample drawing shared by the suite's generators (the 3x3 grid and the photo-like one).

A generator is a scene sampler, question askers (one per type, each asked for a chosen answer) and a renderer.
Sample ``i`` of a split depends only on ``(namespace, split, seed, i)``: question type ``i mod len(types)`` and,
within a type, the answers cycle through that type's answer list, so answers are balanced by construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

SPLITS: dict[str, int] = {"train": 0, "calibration": 1, "test": 2}
IMAGE_TOKEN = "<image>"


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
    scene: Any
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


# An asker returns the question's fields after ``qtype`` (question text, answer, and any extra fields of the
# generator's question class), or None when the scene cannot give the target answer.
Asker = Callable[[Any, str, random.Random], "tuple | None"]


@dataclass(frozen=True)
class Generator:
    namespace: str  # part of every random seed string: generators never share a random stream
    types: tuple[str, ...]
    answers: dict[str, tuple[str, ...]]
    random_scene: Callable[[random.Random], Any]
    askers: dict[str, Asker]
    render: Callable[[Any, random.Random], Image.Image]
    question_class: type = Question

    def rng(self, split: str, seed: int, index: int, salt: str = "") -> random.Random:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        return random.Random(f"{self.namespace}/{split}/{SPLITS[split]}/{seed}/{index}{salt}")

    def target_for(self, index: int) -> tuple[str, str]:
        """The (question type, answer) that sample ``index`` of any split is built to have."""
        qtype = self.types[index % len(self.types)]
        answers = self.answers[qtype]
        return qtype, answers[(index // len(self.types)) % len(answers)]

    def make_sample(self, split: str, index: int, seed: int = 0) -> Sample:
        """Sample ``index`` of ``split``: a scene drawn until it can answer the target question, then rendered."""
        qtype, target = self.target_for(index)
        rng = self.rng(split, seed, index)
        for _ in range(10_000):
            scene = self.random_scene(rng)
            qa = self.askers[qtype](scene, target, rng)
            if qa is not None:
                return Sample(split, index, scene, self.render(scene, rng), self.question_class(qtype, *qa))
        raise RuntimeError(f"could not build a {qtype!r} question with answer {target!r}")  # pragma: no cover

    def make_split(self, split: str, n: int, seed: int = 0, start: int = 0) -> list[Sample]:
        return [self.make_sample(split, i, seed) for i in range(start, start + n)]

    def extra_questions(self, sample: Sample, count: int, seed: int = 0,
                        types: Sequence[str] | None = None) -> list[Question]:
        """Up to ``count`` more distinct questions about the same image (for training several at once), of the
        given ``types`` (all by default)."""
        types = tuple(self.types if types is None else types)
        rng = self.rng(sample.split, seed, sample.index, salt="/extra")
        seen = {sample.question.question}
        out: list[Question] = []
        for _ in range(count * 8):
            if len(out) == count:
                break
            qtype = rng.choice(types)
            qa = self.askers[qtype](sample.scene, rng.choice(self.answers[qtype]), rng)
            if qa is not None and qa[0] not in seen:
                seen.add(qa[0])
                out.append(self.question_class(qtype, *qa))
        return out
