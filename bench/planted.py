"""Planted near-duplicate sets for the dedup bench: real photos plus edited copies, seeded.

- `skimage_set`: scikit-image's photos with the demo's copies (`lookalike.cli.demo.plant_duplicates`:
  JPEG q50, 60 % resize, 4 % crop).
- `opencv_set`: 58 other real photos, mostly OpenCV's sample data (Debian's ``opencv-doc``), with
  copies carrying the edits real duplicates carry (see `EDITS`). It holds photos that look alike but
  are distinct, which is what makes a threshold hard: 13 shots of one person holding a chessboard in
  different poses, two aerial views of one town, one graffiti wall from two viewpoints, two
  butterflies, two homes, six street signs. Of each pair in the package that is one moment seen
  twice (a stereo pair, consecutive video frames, two exposures, an edited copy) only one is kept,
  since whether those count as duplicates is a matter of taste.

Importing this module does nothing; `make bench` runs it like a bench and it exits at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

OPENCV_EXAMPLES = Path("/usr/share/doc/opencv-doc/examples")
OPENCV_PACKAGE = "opencv-doc"
OPENCV_PHOTOS = (
    *(f"data/{name}" for name in (
        "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png",
        "board.jpg", "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
        "ela_original.jpg", "fruits.jpg", "graf1.png", "graf3.png", "home.jpg", "leuvenA.jpg",
        "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "pca_test1.jpg", "rubberwhale1.png",
        "squirrel_cls.jpg", "stuff.jpg", "sudoku.png", "text_defocus.jpg", "text_motion.jpg",
    )),
    *(f"data/left{n:02d}.jpg" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)),
    "alphamat/input_images/plant.jpg", "dnn_superres/butterfly.png", "hfs/data/000.jpg",
    "reg/home.png",
    *(f"text/scenetext{n:02d}.jpg" for n in range(1, 7)),
    *(f"text/scenetext_segmented_word{n:02d}.jpg" for n in range(1, 6)),
)  # fmt: skip
Edited = tuple[Image.Image, int | None]  # the copy, and its JPEG quality (None: saved as PNG)
DEMO_KINDS = {"q50": "jpeg q50", "small": "resize 60%", "crop": "crop 4%"}


@dataclass
class PlantedSet:
    """A folder of images, the planted duplicate pairs (sorted file names), each file's edit
    ("original" for the photos themselves) and the photo each file was made from."""

    name: str
    folder: Path
    pairs: set[tuple[str, str]]
    kinds: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def pair_kind(self, pair: tuple[str, str]) -> str:
        """The edit that separates a planted pair: the copy's, or "copy-copy" for two copies."""
        edits = [self.kinds[name] for name in pair if self.kinds[name] != "original"]
        return edits[0] if len(edits) == 1 else "copy-copy"


def skimage_set(folder: Path) -> PlantedSet:
    """The bench's first set: the demo's planted scikit-image photos."""
    from lookalike.cli.demo import plant_duplicates

    pairs = {tuple(sorted(pair)) for pair in plant_duplicates(folder)}
    kinds, sources = {}, {}
    for path in folder.iterdir():
        stem, _, suffix = path.stem.rpartition("-")
        kinds[path.name] = DEMO_KINDS.get(suffix, "original")
        sources[path.name] = path.name if kinds[path.name] == "original" else f"{stem}.png"
    return PlantedSet("set 1: skimage, demo copies", folder, pairs, kinds, sources)


def opencv_missing() -> str | None:
    """Why the second set cannot be built here, or None."""
    if (OPENCV_EXAMPLES / OPENCV_PHOTOS[0]).exists():
        return None
    return f"OpenCV's sample photos not found in {OPENCV_EXAMPLES} (apt install {OPENCV_PACKAGE})"


def other_photos() -> dict[str, Image.Image]:
    """The second set's sources: OpenCV's sample photos, scikit-learn's two, matplotlib's one."""
    import matplotlib
    from sklearn.datasets import load_sample_images

    photos = {
        path.replace("/", "_").rsplit(".", 1)[0]: Image.open(OPENCV_EXAMPLES / path)
        for path in OPENCV_PHOTOS
    }
    sample = load_sample_images()
    for name, pixels in zip(sample.filenames, sample.images, strict=True):
        photos[f"sklearn_{Path(name).stem}"] = Image.fromarray(pixels)
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos["matplotlib_grace_hopper"] = Image.open(hopper)
    return {name: image.convert("RGB") for name, image in photos.items()}


def opencv_set(folder: Path, copied: float = 0.6, edits_each: int = 2, seed: int = 0) -> PlantedSet:
    """Every photo as a PNG; for a seeded `copied` share of them, `edits_each` edited copies.

    The edits are dealt round-robin from a seeded shuffle of `EDITS`: each kind is planted about
    equally, and a photo's copies all differ (up to seven a photo).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photos = other_photos()
    names = sorted(photos)
    chosen = set(rng.choice(names, size=round(copied * len(names)), replace=False).tolist())
    order, dealt = [str(kind) for kind in rng.permutation(sorted(EDITS))], 0
    planted = PlantedSet("set 2: opencv-doc & co, 7 edits", folder, set())
    for name in names:
        original = f"{name}.png"
        photos[name].save(folder / original)
        files = [original]
        if name in chosen:
            edits = [order[(dealt + i) % len(order)] for i in range(edits_each)]
            files += [plant_copy(photos[name], name, edit, folder, rng) for edit in edits]
            dealt += edits_each
        planted.kinds |= {
            file: file.partition("--")[2].partition(".")[0] or "original" for file in files
        }
        planted.sources |= dict.fromkeys(files, original)
        planted.pairs |= {
            (a, b) if a < b else (b, a) for i, a in enumerate(files) for b in files[i + 1 :]
        }
    return planted


def plant_copy(
    photo: Image.Image, name: str, edit: str, folder: Path, rng: np.random.Generator
) -> str:
    """Write `photo` with `edit` as ``NAME--EDIT.png`` (or ``.jpg``); returns the file name."""
    copy, quality = EDITS[edit](photo, rng)
    file = f"{name}--{edit}.{'png' if quality is None else 'jpg'}"
    copy.save(folder / file, **({} if quality is None else {"quality": quality}))
    return file


def sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def reencode(image: Image.Image, rng: np.random.Generator) -> Edited:
    """JPEG at quality 40-70."""
    return image, int(rng.integers(40, 71))


def halve(image: Image.Image, rng: np.random.Generator) -> Edited:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS), None


def crop(image: Image.Image, rng: np.random.Generator, low=0.05, high=0.10) -> Edited:
    """5-10 % off each side, drawn per side."""
    left, top, right, bottom = rng.uniform(low, high, 4)
    box = (
        image.width * left,
        image.height * top,
        image.width * (1 - right),
        image.height * (1 - bottom),
    )
    return image.crop(tuple(round(v) for v in box)), None


def brightness(image: Image.Image, rng: np.random.Generator) -> Edited:
    """Brighter or darker by 20-30 %."""
    return ImageEnhance.Brightness(image).enhance(1 + sign(rng) * rng.uniform(0.2, 0.3)), None


def contrast(image: Image.Image, rng: np.random.Generator) -> Edited:
    """More or less contrast by 20-30 %."""
    return ImageEnhance.Contrast(image).enhance(1 + sign(rng) * rng.uniform(0.2, 0.3)), None


def rotate(image: Image.Image, rng: np.random.Generator) -> Edited:
    """Turned 2-5 degrees either way and cropped to the largest upright rectangle inside (as an
    editor's straighten tool does), so no blank corners give the copy away."""
    angle = sign(rng) * rng.uniform(2, 5)
    turned = image.rotate(angle, Image.Resampling.BICUBIC)
    width, height = inner_rectangle(image.width, image.height, math.radians(angle))
    left, top = (image.width - width) / 2, (image.height - height) / 2
    return turned.crop((round(left), round(top), round(left + width), round(top + height))), None


def combined(image: Image.Image, rng: np.random.Generator) -> Edited:
    """What a shared copy of an edited photo looks like: cropped 5-8 % a side, brightened or
    darkened 20-30 %, halved, JPEG q50-70."""
    image, _ = crop(image, rng, 0.05, 0.08)
    image, _ = brightness(image, rng)
    image, _ = halve(image, rng)
    return image, int(rng.integers(50, 71))


def inner_rectangle(width: int, height: int, angle: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a `width` x `height` image
    turned by `angle` radians about its centre."""
    long, short = max(width, height), min(width, height)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if short <= 2 * sin_a * cos_a * long:
        x = short / 2
        return (x / sin_a, x / cos_a) if width >= height else (x / cos_a, x / sin_a)
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (width * cos_a - height * sin_a) / cos_2a, (height * cos_a - width * sin_a) / cos_2a


EDITS = {
    "jpeg": reencode,
    "half": halve,
    "crop": crop,
    "brightness": brightness,
    "contrast": contrast,
    "rotate": rotate,
    "combined": combined,
}
