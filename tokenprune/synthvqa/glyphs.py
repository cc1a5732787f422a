"""A tiny hand-drawn 5x7 bitmap font for the characters the ``read`` questions ask about."""

from __future__ import annotations

_ROWS = {
    "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
    "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
    "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
    "P": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
    "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}

CHARACTERS: tuple[str, ...] = tuple(_ROWS)
GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7


def glyph_pixels(char: str) -> list[tuple[int, int]]:
    """The (x, y) cells that are ink in ``char``'s 5x7 bitmap."""
    rows = _ROWS[char]
    return [(x, y) for y, row in enumerate(rows) for x, cell in enumerate(row) if cell == "#"]
