"""Drawing primitives shared by the generators: a coloured shape in a box, a bitmap character, colour jitter.

Pure functions of their geometry (no randomness), so a generator can draw the same item again into a mask.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from .glyphs import glyph_pixels

RGB = tuple[int, int, int]


def jitter_color(rgb: RGB, rng: random.Random, spread: int = 15) -> RGB:
    return tuple(max(0, min(255, v + rng.randint(-spread, spread))) for v in rgb)  # type: ignore[return-value]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, left: int, top: int, size: int, fill) -> None:
    """``shape`` (square, circle or triangle with its apex up) in the ``size``-pixel box at (left, top)."""
    right, bottom = left + size - 1, top + size - 1
    if shape == "square":
        draw.rectangle([left + 1, top + 1, right - 1, bottom - 1], fill=fill)
    elif shape == "circle":
        draw.ellipse([left, top, right, bottom], fill=fill)
    elif shape == "triangle":
        draw.polygon([((left + right) / 2, top), (left, bottom), (right, bottom)], fill=fill)
    else:
        raise ValueError(f"draw_shape: unknown shape {shape!r}; expected square, circle or triangle")


def draw_glyph(draw: ImageDraw.ImageDraw, char: str, left: int, top: int, scale: int, fill) -> None:
    """``char``'s 5x7 bitmap with its top-left corner at (left, top), each bitmap cell ``scale`` pixels wide."""
    for x, y in glyph_pixels(char):
        draw.rectangle([left + x * scale, top + y * scale, left + x * scale + scale - 1, top + y * scale + scale - 1],
                       fill=fill)
