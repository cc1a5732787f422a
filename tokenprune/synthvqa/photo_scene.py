"""Photo-like scenes: a few objects of several sizes anywhere on a large flat, gradient or textured background.

A scene stores its full geometry (every position, size and jittered colour, and the background's parameters),
so rendering is a pure function of the scene and ground truth (which of the 24x24 patches each object covers)
is computed by drawing each object again into a mask.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .drawing import RGB, draw_glyph, draw_shape, jitter_color
from .glyphs import CHARACTERS, GLYPH_HEIGHT, GLYPH_WIDTH
from .scene import COLORS, INK, SHAPES

IMAGE_SIZE = 96
PATCH = 4
PATCHES_PER_SIDE = IMAGE_SIZE // PATCH  # 24 -> 576 patches, LLaVA-1.5's vision-token count
NUM_PATCHES = PATCHES_PER_SIDE**2

SHAPE_SIZES: dict[str, tuple[int, int]] = {"small": (7, 9), "medium": (12, 14), "large": (18, 22)}  # box side, px
GLYPH_SCALES: dict[str, int] = {"small": 1, "large": 2}  # 5x7 or 10x14 pixels of ink on a light sign
SIGN_BORDER = 2
SIGN_COLOR = (250, 250, 245)
# Muted backgrounds, far from the saturated object colours and from the sign's white.
BACKGROUND_COLORS: tuple[RGB, ...] = ((200, 200, 200), (222, 210, 185), (188, 202, 218), (198, 216, 192),
                                      (215, 205, 215), (170, 175, 165))
DISTRACTOR_COLORS: tuple[RGB, ...] = ((95, 95, 95), (135, 100, 65), (255, 255, 255), (150, 150, 165))
DISTRACTOR_KINDS = ("cross", "hbar", "vbar", "dot")
REGION_NAMES: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right",
                                 "bottom left", "bottom", "bottom right")
GAP = 2  # pixels kept free around every object


@dataclass(frozen=True)
class PhotoItem:
    """An object the questions ask about: a coloured shape or a character on a sign."""

    kind: str  # "shape" or "glyph"
    size: str  # "small", "medium", "large"
    left: int
    top: int
    width: int
    height: int
    fill: RGB
    color: str | None = None
    shape: str | None = None
    char: str | None = None

    @property
    def center(self) -> tuple[float, float]:
        return self.left + (self.width - 1) / 2, self.top + (self.height - 1) / 2


@dataclass(frozen=True)
class Distractor:
    """Clutter no question is about (a cross, a bar or a dot in a neutral colour)."""

    kind: str
    left: int
    top: int
    width: int
    height: int
    fill: RGB


@dataclass(frozen=True)
class Background:
    kind: str  # "flat", "gradient" or "texture"
    colors: tuple[RGB, ...]
    vertical: bool = False  # gradient direction
    offsets: tuple[int, ...] = ()  # texture: a coarse grid of brightness offsets, smoothed when drawn


@dataclass(frozen=True)
class PhotoScene:
    background: Background
    items: tuple[PhotoItem, ...]
    distractors: tuple[Distractor, ...]

    @property
    def shapes(self) -> list[PhotoItem]:
        return [it for it in self.items if it.kind == "shape"]

    @property
    def glyphs(self) -> list[PhotoItem]:
        return [it for it in self.items if it.kind == "glyph"]


def region_of(item: PhotoItem, margin: float = 3.0) -> str | None:
    """The 3x3 region (``REGION_NAMES``) holding the item's centre, or None within ``margin`` px of a border
    between regions (the position words would be ambiguous there)."""
    third = IMAGE_SIZE / 3
    index = []
    for v in (item.center[1], item.center[0]):
        k = min(2, int(v // third))
        if min(abs(v - third), abs(v - 2 * third)) < margin:
            return None
        index.append(k)
    return REGION_NAMES[index[0] * 3 + index[1]]


def _background(rng: random.Random) -> Background:
    kind = rng.choice(("flat", "gradient", "texture"))
    base = jitter_color(rng.choice(BACKGROUND_COLORS), rng, 8)
    if kind == "flat":
        return Background(kind, (base,))
    if kind == "gradient":
        other = jitter_color(rng.choice(BACKGROUND_COLORS), rng, 8)
        return Background(kind, (base, other), vertical=rng.random() < 0.5)
    return Background(kind, (base,), offsets=tuple(rng.randint(-18, 18) for _ in range(8 * 8)))


def _free(box, taken) -> bool:
    left, top, w, h = box
    return all(left + w + GAP <= l2 or l2 + w2 + GAP <= left or top + h + GAP <= t2 or t2 + h2 + GAP <= top
               for l2, t2, w2, h2 in taken)


def _place(rng: random.Random, w: int, h: int, taken: list) -> tuple[int, int] | None:
    for _ in range(50):
        box = (rng.randint(1, IMAGE_SIZE - 1 - w), rng.randint(1, IMAGE_SIZE - 1 - h), w, h)
        if _free(box, taken):
            taken.append(box)
            return box[0], box[1]
    return None


def random_photo_scene(rng: random.Random) -> PhotoScene:
    """3-6 coloured shapes (small, medium, large), 1-2 characters on signs and 2-5 distractors, placed anywhere
    without overlapping, on a flat, gradient or textured background."""
    background = _background(rng)
    taken: list = []
    items: list[PhotoItem] = []
    for _ in range(rng.randint(3, 6)):
        size = rng.choice(tuple(SHAPE_SIZES))
        side = rng.randint(*SHAPE_SIZES[size])
        at = _place(rng, side, side, taken)
        if at is not None:
            color = rng.choice(list(COLORS))
            items.append(PhotoItem("shape", size, *at, side, side, jitter_color(COLORS[color], rng), color=color,
                                   shape=rng.choice(SHAPES)))
    for _ in range(rng.randint(1, 2)):
        size = rng.choice(tuple(GLYPH_SCALES))
        scale = GLYPH_SCALES[size]
        w, h = GLYPH_WIDTH * scale + 2 * SIGN_BORDER, GLYPH_HEIGHT * scale + 2 * SIGN_BORDER
        at = _place(rng, w, h, taken)
        if at is not None:
            items.append(PhotoItem("glyph", size, *at, w, h, SIGN_COLOR, char=rng.choice(CHARACTERS)))
    distractors = []
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(DISTRACTOR_KINDS)
        w, h = {"cross": (5, 5), "hbar": (rng.randint(5, 9), 1), "vbar": (1, rng.randint(5, 9)), "dot": (2, 2)}[kind]
        at = _place(rng, w, h, taken)
        if at is not None:
            distractors.append(Distractor(kind, *at, w, h, rng.choice(DISTRACTOR_COLORS)))
    return PhotoScene(background, tuple(items), tuple(distractors))


def render_background(background: Background) -> Image.Image:
    if background.kind == "flat":
        return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background.colors[0])
    if background.kind == "gradient":
        a, b = background.colors
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
        draw = ImageDraw.Draw(image)
        for i in range(IMAGE_SIZE):
            t = i / (IMAGE_SIZE - 1)
            color = tuple(round(x + (y - x) * t) for x, y in zip(a, b))
            draw.line([(0, i), (IMAGE_SIZE - 1, i)] if background.vertical else [(i, 0), (i, IMAGE_SIZE - 1)],
                      fill=color)
        return image
    base = background.colors[0]
    coarse = Image.new("RGB", (8, 8))
    coarse.putdata([tuple(max(0, min(255, v + o)) for v in base) for o in background.offsets])
    return coarse.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def _draw_item(draw: ImageDraw.ImageDraw, item: PhotoItem, fill=None, ink=None) -> None:
    if item.kind == "shape":
        draw_shape(draw, item.shape, item.left, item.top, item.width, item.fill if fill is None else fill)
        return
    draw.rectangle([item.left, item.top, item.left + item.width - 1, item.top + item.height - 1],
                   fill=item.fill if fill is None else fill)
    scale = GLYPH_SCALES[item.size]
    draw_glyph(draw, item.char, item.left + SIGN_BORDER, item.top + SIGN_BORDER, scale, INK if ink is None else ink)


def _draw_distractor(draw: ImageDraw.ImageDraw, d: Distractor, fill=None) -> None:
    fill = d.fill if fill is None else fill
    if d.kind == "cross":
        draw.line([(d.left + 2, d.top), (d.left + 2, d.top + 4)], fill=fill)
        draw.line([(d.left, d.top + 2), (d.left + 4, d.top + 2)], fill=fill)
    else:
        draw.rectangle([d.left, d.top, d.left + d.width - 1, d.top + d.height - 1], fill=fill)


def render_photo(scene: PhotoScene, rng: random.Random | None = None) -> Image.Image:
    """Draw ``scene`` as a 96x96 RGB image (``rng`` is unused: every random choice is in the scene)."""
    image = render_background(scene.background)
    draw = ImageDraw.Draw(image)
    for d in scene.distractors:
        _draw_distractor(draw, d)
    for item in scene.items:
        _draw_item(draw, item)
    return image


def _patches_of_mask(mask: Image.Image) -> frozenset[int]:
    # A 4x4 box average is above 0 exactly when one of its pixels is ink.
    return frozenset(i for i, v in enumerate(mask.reduce(PATCH).tobytes()) if v > 0)


def item_patches(item: PhotoItem) -> frozenset[int]:
    """Raster indices (row * 24 + column) of the patches ``item`` draws on."""
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    _draw_item(ImageDraw.Draw(mask), item, fill=255, ink=255)
    return _patches_of_mask(mask)


def background_patches(scene: PhotoScene) -> list[int]:
    """Patches on no object and no distractor: only the background is drawn there."""
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(mask)
    for d in scene.distractors:
        _draw_distractor(draw, d, fill=255)
    for item in scene.items:
        _draw_item(draw, item, fill=255, ink=255)
    return sorted(set(range(NUM_PATCHES)) - _patches_of_mask(mask))
