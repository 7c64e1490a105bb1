"""Draw the tray icon for an ``IconSpec`` with Pillow: no image files to ship or theme."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from edgevoice.tray_model import BADGE_COLOUR, IconSpec

if TYPE_CHECKING:
    from PIL import Image

WHITE = (255, 255, 255, 255)


@lru_cache(maxsize=32)
def render(spec: IconSpec, size: int = 64) -> Image.Image:
    """A ``size``-square RGBA image: a disc in the state's colour with a white glyph."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((1, 1, size - 2, size - 2), fill=(*spec.colour, 255))
    s = size / 64  # glyphs are laid out on a 64-pixel grid
    _GLYPHS[spec.glyph](d, s)
    if spec.badge:
        d.ellipse((size * 0.62, 0, size - 1, size * 0.38), fill=(*BADGE_COLOUR, 255),
                  outline=WHITE, width=max(1, round(2 * s)))
    return img


def _box(s: float, *xy: float) -> list[float]:
    return [v * s for v in xy]


def _mic(d, s: float) -> None:
    d.rounded_rectangle(_box(s, 25, 13, 39, 37), radius=7 * s, fill=WHITE)
    d.arc(_box(s, 19, 21, 45, 43), 0, 180, fill=WHITE, width=max(1, round(3 * s)))
    d.line(_box(s, 32, 43, 32, 50), fill=WHITE, width=max(1, round(3 * s)))
    d.line(_box(s, 25, 51, 39, 51), fill=WHITE, width=max(1, round(3 * s)))


def _mic_off(d, s: float) -> None:
    _mic(d, s)
    d.line(_box(s, 16, 14, 48, 50), fill=WHITE, width=max(1, round(5 * s)))


def _dots(d, s: float) -> None:
    for x in (18, 32, 46):
        d.ellipse(_box(s, x - 5, 27, x + 5, 37), fill=WHITE)


def _wave(d, s: float) -> None:
    for x, h in ((17, 8), (25, 16), (32, 22), (39, 16), (47, 8)):
        d.rounded_rectangle(_box(s, x - 2.5, 32 - h, x + 2.5, 32 + h), radius=2 * s, fill=WHITE)


def _cloud(d, s: float) -> None:
    d.ellipse(_box(s, 14, 28, 32, 46), fill=WHITE)
    d.ellipse(_box(s, 23, 18, 43, 38), fill=WHITE)
    d.ellipse(_box(s, 34, 26, 51, 43), fill=WHITE)
    d.rectangle(_box(s, 23, 36, 43, 46), fill=WHITE)


def _cross(d, s: float) -> None:
    w = max(1, round(6 * s))
    d.line(_box(s, 20, 20, 44, 44), fill=WHITE, width=w)
    d.line(_box(s, 20, 44, 44, 20), fill=WHITE, width=w)


def _pause(d, s: float) -> None:
    d.rectangle(_box(s, 22, 18, 29, 46), fill=WHITE)
    d.rectangle(_box(s, 35, 18, 42, 46), fill=WHITE)


def _alert(d, s: float) -> None:
    d.rounded_rectangle(_box(s, 28, 13, 36, 38), radius=3 * s, fill=WHITE)
    d.ellipse(_box(s, 27.5, 42, 36.5, 51), fill=WHITE)


_GLYPHS = {"mic": _mic, "mic_off": _mic_off, "dots": _dots, "wave": _wave, "cloud": _cloud,
           "cross": _cross, "pause": _pause, "alert": _alert}
