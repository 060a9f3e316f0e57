"""The demo: a small real image set from installed packages, embedded with the offline default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from PIL import Image

from lookalike.jobs.bulk import EmbedReport, embed_images

if TYPE_CHECKING:
    from lookalike.classify import Prediction, TrainReport

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel")
DIGIT_SIZE = 32


HELD_OUT_DIGITS = (1796,)  # kept out of the collection: the demo classifier predicts them


def write_digits(folder: Path, held_out_folder: Path | None = None) -> int:
    """scikit-learn's handwritten digits as PNGs, dark ink on white, one sub-folder per digit,
    upscaled smoothly from 8 x 8 as a scan would be (blocky 4 x 4-pixel squares misled the
    pretrained features: a digit's nearest neighbour had its label 0.77 of the time, 0.88 smooth).

    The digits in `HELD_OUT_DIGITS` go to `held_out_folder` (named ``digit-NNNN-LABEL.png``)
    instead, when one is given. Returns how many were written to `folder`.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = 0
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        ink = (255 - pixels * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(ink).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
        if held_out_folder is not None and index in HELD_OUT_DIGITS:
            path = held_out_folder / f"digit-{index:04d}-{target}.png"
        else:
            path = folder / str(target) / f"digit-{index:04d}.png"
            written += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            image.save(path)
    return written


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
    return written + write_copies(folder)


def write_copies(folder: Path) -> int:
    """Near-duplicates for dedup to find: a halved re-encoded copy, a cropped one, a brighter one."""
    from PIL import ImageEnhance

    edits = {
        "chelsea.jpg": lambda im: im.resize((im.width // 2, im.height // 2)),
        "coffee.jpg": lambda im: im.crop((30, 20, im.width - 30, im.height - 20)),
        "astronaut.jpg": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    }
    written = 0
    for name, edit in edits.items():
        if (folder / name).exists():
            copy = edit(Image.open(folder / name).convert("RGB"))
            copy.save(folder / f"copy-of-{name}", quality=60)
            written += 1
    return written


def run_demo(workdir: str | Path, progress: bool = True) -> tuple[EmbedReport, dict[str, int]]:
    """Write the demo images under `workdir`/images and embed them into `workdir`/collection."""
    workdir = Path(workdir)
    images = workdir / "images"
    counts = {
        "digits": write_digits(images / "digits", held_out_folder=images / "held-out"),
        "photos": write_photos(images / "photos"),
    }
    report = embed_images(
        [images / "digits", images / "photos"],
        workdir / "collection",
        labels_from_folders=True,
        progress=progress,
    )
    return report, counts


def demo_neighbours(workdir: str | Path, k: int = 6) -> tuple[list[tuple[str, list]], Path]:
    """The neighbours of one digit and one photo (search's defaults), drawn on a contact sheet."""
    from lookalike import service
    from lookalike.index.sheet import contact_sheet

    workdir = Path(workdir)
    queries = [
        str(workdir.resolve() / "images" / "digits" / "7" / "digit-0007.png"),
        str(workdir.resolve() / "images" / "photos" / "chelsea.jpg"),
    ]
    with service.open(workdir / "collection") as library:
        results = [(found.query, found.hits[1:]) for found in library.search_images(queries, k + 1)]
    rows = [
        [(query, "query"), *[(h.path, f"d={h.distance:.3f} {h.label or ''}") for h in hits]]
        for query, hits in results
    ]
    return results, contact_sheet(rows, workdir / "neighbours.png")


def demo_duplicates(workdir: str | Path, progress: bool = True):
    """Near-duplicates among the demo's photos, at a threshold calibrated on them."""
    from lookalike import service

    workdir = Path(workdir)
    photos = service.filters(path_prefix=str(workdir.resolve() / "images" / "photos") + "/")
    with service.open(workdir / "collection") as library:
        report = library.dedup(filters=photos, progress=progress)
        clusters = [
            [Path(report.item(i)["path"]).name for i in members] for members in report.clusters
        ]
    return report.calibration.calibration, clusters


def demo_classifier(workdir: str | Path) -> tuple[TrainReport, list[Prediction]]:
    """Train a classifier on the embedded digits (cached features only) and predict the held-out ones."""
    from lookalike import service
    from lookalike.classify import train_classifier

    workdir = Path(workdir)
    report = train_classifier(workdir / "collection", "digits", overwrite=True)
    held_out = sorted((workdir / "images" / "held-out").glob("*.png"))
    with service.open(workdir / "collection", read_only=True) as library:
        predictions = library.predict_images("digits", held_out, k=3)
    return report, predictions


DUPLICATE_SOURCES = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "moon",
    "coins",
    "text",
    "clock",
    "grass",
    "gravel",
    "brick",
    "page",
)


def plant_duplicates(folder: Path, copied: int = 9) -> list[tuple[str, str]]:
    """Real photos plus, for the first `copied`, a re-encoded, a resized and a cropped copy.

    Returns the planted duplicate pairs as (file name, file name), each pair once.
    """
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    for number, name in enumerate(DUPLICATE_SOURCES):
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        image.save(folder / f"{name}.png")
        groups[name] = [f"{name}.png"]
        if number >= copied:
            continue
        width, height = image.size
        image.save(folder / f"{name}-q50.jpg", quality=50)
        image.resize((int(width * 0.6), int(height * 0.6))).save(folder / f"{name}-small.png")
        margin = (int(width * 0.04), int(height * 0.04))
        image.crop((*margin, width - margin[0], height - margin[1])).save(
            folder / f"{name}-crop.png"
        )
        groups[name] += [f"{name}-q50.jpg", f"{name}-small.png", f"{name}-crop.png"]
    return [
        (a, b) for files in groups.values() for i, a in enumerate(files) for b in files[i + 1 :]
    ]


def echo_training(trained: TrainReport) -> None:
    scores, choice = trained.evaluation, trained.choice
    click.echo(
        f"classifier 'digits' ({trained.card['model']}) trained from the cached features in "
        f"{trained.card['fit_seconds']:.2f} s: {scores.method} accuracy {scores.accuracy:.3f}, "
        f"macro-F1 {scores.macro_f1:.3f}; confusion matrix: {trained.path / 'confusion.png'}"
    )
    if choice is not None:
        final = next(c for c in choice.candidates if c.layers == ("embedding",))
        click.echo(
            f"  layer chosen: {choice.chosen.key} (CV accuracy {choice.chosen.accuracy:.3f}); "
            f"the final embedding alone: {final.accuracy:.3f}"
        )


@click.command()
@click.option("--workdir", default="demo-data", show_default=True, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(workdir, quiet) -> None:
    """Embed a small real image set (digits, photos); search it; train and use a digit classifier."""
    report, counts = run_demo(workdir, progress=not quiet)
    click.echo(
        f"wrote {counts['digits']} digit images and {counts['photos']} photos under {workdir / 'images'}"
    )
    click.echo(report.summary())
    trained, predictions = demo_classifier(workdir)
    echo_training(trained)
    results, sheet = demo_neighbours(workdir)
    for query, hits in results:
        click.echo(f"nearest to {query}:")
        for hit in hits:
            click.echo(f"  {hit.distance:.3f}  {hit.label or '-':<4} {hit.path}")
    click.echo(f"contact sheet of those neighbours: {sheet}")
    calibration, clusters = demo_duplicates(workdir, progress=not quiet)
    click.echo("duplicates among the photos, " + "\n".join(calibration.lines()))
    for members in clusters:
        click.echo(f"  duplicates: {', '.join(members)}")
    for prediction in predictions:
        confidence = prediction.probabilities[prediction.label]
        click.echo(
            f"held-out {Path(prediction.source).name}: predicted {prediction.label} "
            f"(p={confidence:.3f}); nearest labels "
            f"{', '.join(hit.label or '-' for hit in prediction.neighbours)}"
        )
    click.echo(f"inspect it with: lookalike info --collection {report.collection}")
