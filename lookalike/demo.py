"""The demo: a small real image set from installed packages, embedded with the offline default."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.bulk import EmbedReport, embed_images

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel")
DIGIT_SIZE = 32


def write_digits(folder: Path) -> int:
    """scikit-learn's 1,797 handwritten digits as PNGs, dark ink on white, one sub-folder per digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        ink = (255 - pixels * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(ink).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.NEAREST)
        path = folder / str(target) / f"digit-{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            image.save(path)
    return len(digits.images)


def write_photos(folder: Path) -> int:
    """The photos that scikit-image and scikit-learn ship (no download needed)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in SKIMAGE_PHOTOS:
        try:
            pixels = getattr(skimage.data, name)()
        except Exception as error:
            log.info("skipping skimage.data.%s: %s", name, error)
            continue
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}.jpg", quality=92)
        written += 1
    sample = load_sample_images()
    for name, pixels in zip(sample.filenames, sample.images, strict=True):
        Image.fromarray(pixels).save(folder / Path(name).name, quality=92)
        written += 1
    return written


def run_demo(workdir: str | Path, progress: bool = True) -> tuple[EmbedReport, dict[str, int]]:
    """Write the demo images under `workdir`/images and embed them into `workdir`/collection."""
    workdir = Path(workdir)
    images = workdir / "images"
    counts = {
        "digits": write_digits(images / "digits"),
        "photos": write_photos(images / "photos"),
    }
    report = embed_images(
        [images / "digits", images / "photos"],
        workdir / "collection",
        labels_from_folders=True,
        progress=progress,
    )
    return report, counts
