"""The audit bench's data: Fashion-MNIST training images with real photos planted among them.

Written once as PNGs/JPEGs under the work folder and embedded with `lookalike embed`'s defaults
(the offline EfficientNet-Lite0, its default layers) into one collection; a second run embeds
nothing. Importing this module does nothing; `make bench` runs it like a bench and it exits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from planted import OPENCV_EXAMPLES
from transfer_bench import CLASSES, load, nested_order, write_pngs

from lookalike.jobs.bulk import embed_images

# Distinct real photos (no two of one scene): Debian's opencv-doc, else scikit-image's and
# scikit-learn's own.
OPENCV_PHOTOS = (
    "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
    "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png", "ela_original.jpg",
    "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg", "messi5.jpg", "orange.jpg",
    "rubberwhale1.png", "squirrel_cls.jpg", "stuff.jpg", "sudoku.png",
)  # fmt: skip
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "moon", "page", "text", "coins", "brick", "grass", "gravel", "colorwheel", "retina", "eagle",
    "logo", "clock", "horse", "cat",
)  # fmt: skip


def write_photos(count: int, folder: Path) -> list[Path]:
    """`count` real photos as files in `folder` (the same ones on every run)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = [OPENCV_EXAMPLES / "data" / name for name in OPENCV_PHOTOS]
    found = [path for path in found if path.is_file()]
    paths = []
    for source in found[:count]:
        target = (folder / source.name).with_suffix(".png")
        if not target.exists():
            Image.open(source).convert("RGB").save(target)
        paths.append(target)
    if len(paths) < count:
        import skimage.data

        for name in SKIMAGE_PHOTOS[: count - len(paths)]:
            target = folder / f"skimage-{name}.png"
            if not target.exists():
                pixels = np.asarray(getattr(skimage.data, name)())
                Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(target)
            paths.append(target)
    return [path.resolve() for path in paths]


def prepare(data_folder: Path, work: Path, images: int, photos: int) -> dict:
    """The collection (embedded once), the Fashion-MNIST files with their true labels, the
    photos' files."""
    data = load(data_folder)
    rows = nested_order(data["train_y"])[:images]
    paths = write_pngs(data["train_x"], data["train_y"], rows, work / "images/clothes")
    planted = write_photos(photos, work / "images/photos")
    report = embed_images([work / "images"], work / "collection", {}, batch_size=8)
    print(f"embedded: {report.summary()}")
    truth = {
        str(p.resolve()): CLASSES[data["train_y"][row]] for p, row in zip(paths, rows, strict=True)
    }
    return {"collection": work / "collection", "truth": truth, "photos": [str(p) for p in planted]}
