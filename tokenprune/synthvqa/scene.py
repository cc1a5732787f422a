"""Scenes (what is in which grid cell) and their rendering to PIL images."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .drawing import draw_glyph, draw_shape, jitter_color
from .glyphs import CHARACTERS, GLYPH_HEIGHT, GLYPH_WIDTH

GRID = 3  # cells per side
CELL = 16  # pixels per cell side (4x4 patches of 4 pixels)
IMAGE_SIZE = GRID * CELL  # 48

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
BACKGROUND = (235, 235, 235)
INK = (20, 20, 20)


@dataclass(frozen=True)
class Item:
    """What one cell holds: a coloured shape (``kind == "shape"``) or a drawn character (``"glyph"``)."""

    row: int  # 1-based, top to bottom
    col: int  # 1-based, left to right
    kind: str
    color: str | None = None
    shape: str | None = None
    char: str | None = None


@dataclass(frozen=True)
class Scene:
    items: tuple[Item, ...]

    @property
    def shapes(self) -> list[Item]:
        return [item for item in self.items if item.kind == "shape"]

    @property
    def glyphs(self) -> list[Item]:
        return [item for item in self.items if item.kind == "glyph"]


def random_scene(rng: random.Random) -> Scene:
    """3-6 coloured shapes and 1-3 characters at distinct random cells of the 3x3 grid."""
    cells = [(r, c) for r in range(1, GRID + 1) for c in range(1, GRID + 1)]
    rng.shuffle(cells)
    n_shapes = rng.randint(3, 6)
    n_glyphs = rng.randint(1, 3)
    items = []
    for r, c in cells[:n_shapes]:
        items.append(Item(r, c, "shape", color=rng.choice(list(COLORS)), shape=rng.choice(SHAPES)))
    for r, c in cells[n_shapes : n_shapes + n_glyphs]:
        items.append(Item(r, c, "glyph", char=rng.choice(CHARACTERS)))
    items.sort(key=lambda it: (it.row, it.col))
    return Scene(tuple(items))


def _draw_shape(draw: ImageDraw.ImageDraw, item: Item, x0: int, y0: int, rng: random.Random) -> None:
    size = rng.randint(13, 16)
    dx = rng.randint(0, CELL - size)
    dy = rng.randint(0, CELL - size)
    draw_shape(draw, item.shape, x0 + dx, y0 + dy, size, jitter_color(COLORS[item.color], rng))


def _draw_glyph(draw: ImageDraw.ImageDraw, item: Item, x0: int, y0: int, rng: random.Random) -> None:
    scale = 2
    width, height = GLYPH_WIDTH * scale, GLYPH_HEIGHT * scale
    left = x0 + rng.randint(0, CELL - width)
    top = y0 + rng.randint(0, CELL - height)
    draw_glyph(draw, item.char, left, top, scale, INK)


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw ``scene`` as a 48x48 RGB image; ``rng`` jitters sizes, offsets and colours."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for item in scene.items:
        x0, y0 = (item.col - 1) * CELL, (item.row - 1) * CELL
        if item.kind == "shape":
            _draw_shape(draw, item, x0, y0, rng)
        else:
            _draw_glyph(draw, item, x0, y0, rng)
    return image
