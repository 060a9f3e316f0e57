"""Near-duplicate variants of an image: the edits real copies carry (re-encoding, downscaling,
cropping, brightness and contrast changes, small rotations, and those combined), seeded."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

from PIL import Image, ImageEnhance

Edit = Callable[[Image.Image, random.Random], Image.Image]


def _crop(image: Image.Image, rng: random.Random) -> Image.Image:
    share = rng.uniform(0.04, 0.10)  # of each side
    width, height = image.size
    dx, dy = round(width * share), round(height * share)
    return image.crop((dx, dy, width - dx, height - dy))


def _half(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    scale = rng.uniform(0.4, 0.6)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _brightness(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(rng.choice((0.75, 0.8, 1.2, 1.3)))


def _contrast(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(rng.choice((0.75, 0.8, 1.2, 1.3)))


def _rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.uniform(2, 5) * rng.choice((-1, 1))
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def _combined(image: Image.Image, rng: random.Random) -> Image.Image:
    return _brightness(_half(_crop(image, rng), rng), rng)


EDITS: dict[str, Edit] = {
    "jpeg": lambda image, rng: image,  # the re-encoding below is the edit
    "half": _half,
    "crop": _crop,
    "brightness": _brightness,
    "contrast": _contrast,
    "rotate": _rotate,
    "combined": _combined,
}


def variant_bytes(image: Image.Image, edit: str, rng: random.Random) -> bytes:
    """`image` with one edit of `EDITS`, encoded as a JPEG (quality 40-90: a copy is re-encoded)."""
    edited = EDITS[edit](image.convert("RGB"), rng)
    quality = rng.randint(40, 60) if edit in ("jpeg", "combined") else rng.randint(75, 90)
    buffer = io.BytesIO()
    edited.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
