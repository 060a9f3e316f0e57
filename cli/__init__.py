"""The `lookalike` command line: parsing and printing only; the work is in the library."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

import click

from lookalike import __version__
from lookalike.cli.options import collection_option, weights_value
from lookalike.embedder.sources import PILLOW_PIXEL_LIMIT
from lookalike.errors import LookalikeError

USER_ERRORS = (LookalikeError, ValueError, KeyError, OSError)


class LookalikeGroup(click.Group):
    """Turns the library's errors into one-line messages (a traceback with -v)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            if ctx.params.get("verbose"):
                raise
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise click.ClickException(str(message)) from error


@click.group(cls=LookalikeGroup)
@click.version_option(__version__, prog_name="lookalike")
@click.option(
    "-v", "--verbose", count=True, help="More logging (-v: info, -vv: debug); tracebacks."
)
def main(verbose: int) -> None:
    """Embed images with a frozen pretrained backbone; search and classify the cached features."""
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * verbose),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@collection_option("Collection directory (created on first use).")
@click.option(
    "--backbone",
    help="Backbone name: default, a torchvision model, timm:<name>, hub:<repo>:<entry>.",
)
@click.option("--weights", help="default, none (random init), a weights id, or a checkpoint file.")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Layer(s) to embed: 'embedding' or a module name. Repeatable.",
)
@click.option(
    "--pooling",
    type=click.Choice(["avg", "max", "gem", "cls"]),
    help="Pooling for spatial maps / tokens.",
)
@click.option(
    "--normalize/--no-normalize", default=None, help="L2-normalise embeddings (default: on)."
)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="Crop size override (the resize keeps the weights' ratio).",
)
@click.option(
    "--labels-from-folders",
    is_flag=True,
    help="Label each image by its first sub-folder under the root.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per batch (default: 8 on CPU, 128 on GPU).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Decoders: threads on CPU (default: one per core), processes on GPU (cores - 1, at most 8).",
)
@click.option("--device", help="cuda, mps or cpu (default: the best available).")
@click.option(
    "--precision",
    default="auto",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    help="Autocast precision on GPU.",
)
@click.option(
    "--engine",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "onnx", "torch"]),
    help="auto: ONNX Runtime on a CPU where the backbone exports and matches torch, else torch.",
)
@click.option(
    "--shard-size",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Items per shard (the unit of resume).",
)
@click.option(
    "--retry-failed", is_flag=True, help="Try again files that failed before and have not changed."
)
@click.option("--prune", is_flag=True, help="Remove the items of files no longer under IMAGES.")
@click.option(
    "--checksum",
    is_flag=True,
    help="Find changed files by content (SHA-256), not only by size and mtime.",
)
@click.option(
    "--max-pixels",
    default=64_000_000,
    show_default=True,
    type=click.IntRange(1, PILLOW_PIXEL_LIMIT),
    help="Refuse images with more pixels.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def embed(
    images,
    collection_dir,
    backbone,
    weights,
    layers,
    pooling,
    normalize,
    image_size,
    labels_from_folders,
    batch_size,
    workers,
    device,
    precision,
    engine,
    shard_size,
    retry_failed,
    prune,
    checksum,
    max_pixels,
    quiet,
) -> None:
    """Bring a collection in step with the images under IMAGES (folders or files): new and
    changed files embedded, with --prune files gone removed; resumable, and a second run into the
    same collection waits for the first."""
    from lookalike.jobs.bulk import embed_images

    options = {
        "name": backbone,
        "weights": weights,
        "layers": layers or None,
        "pooling": pooling,
        "normalize": normalize,
        "image_size": image_size,
    }
    embedder = {k: v for k, v in options.items() if v is not None}
    if weights is not None:
        embedder["weights"] = weights_value(weights)
    report = embed_images(
        images,
        collection_dir,
        embedder,
        labels_from_folders=labels_from_folders,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        precision=precision,
        engine=engine,
        shard_size=shard_size,
        retry_failed=retry_failed,
        prune=prune,
        checksum=checksum,
        max_pixels=max_pixels,
        progress=not quiet,
    )
    for failure in report.failed:
        click.echo(f"failed: {failure['path']}: {failure['reason']}", err=True)
    click.echo(report.summary())


@main.command()
@click.argument("backbone", default="default")
@click.option(
    "--weights",
    default="none",
    show_default=True,
    help="Weights to build with (shapes do not depend on them).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    help="Input size (default: the weights' crop size).",
)
@click.option(
    "--filter", "pattern", help="Only layers matching this glob, e.g. 'layer*' or 'blocks.*'."
)
def layers(backbone, weights, image_size, pattern) -> None:
    """List the hookable layers of BACKBONE with their output shapes for one image."""
    from lookalike.embedder import list_layers

    rows = list_layers(backbone, weights=weights_value(weights), image_size=image_size)
    rows = [r for r in rows if not pattern or fnmatch.fnmatch(r[0], pattern)]
    width = max((len(name) for name, _, _ in rows), default=10)
    click.echo(f"{'layer':<{width}}  {'type':<24}  output shape")
    click.echo(f"{'embedding':<{width}}  {'(model output, no head)':<24}  (pooled to a vector)")
    for name, kind, shape in rows:
        click.echo(f"{name:<{width}}  {kind:<24}  {tuple(shape)}")


@main.command()
@click.option(
    "--source", type=click.Choice(["torchvision", "timm"]), help="Only this source's names."
)
@click.option("--filter", "pattern", help="Glob on names, e.g. 'resnet*' or 'timm:vit_*'.")
def backbones(source, pattern) -> None:
    """List backbone names (hub:<repo>:<entry> and checkpoint files work too)."""
    from lookalike.embedder import list_backbones

    for name in list_backbones(source):
        if not pattern or fnmatch.fnmatch(name, pattern):
            click.echo(name)


@main.command()
@click.option("--workdir", default="demo-data", show_default=True, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(workdir, quiet) -> None:
    """Embed a small real image set (digits, photos); search it; train and use a digit classifier."""
    from lookalike.cli.demo import demo_classifier, demo_neighbours, run_demo

    report, counts = run_demo(workdir, progress=not quiet)
    click.echo(
        f"wrote {counts['digits']} digit images and {counts['photos']} photos under {workdir / 'images'}"
    )
    click.echo(report.summary())
    results, sheet = demo_neighbours(workdir)
    for query, hits in results:
        click.echo(f"nearest to {query}:")
        for hit in hits:
            click.echo(f"  {hit.distance:.3f}  {hit.label or '-':<4} {hit.path}")
    click.echo(f"contact sheet of those neighbours: {sheet}")
    trained, predictions = demo_classifier(workdir)
    scores = trained.evaluation
    click.echo(
        f"classifier 'digits' ({trained.card['model']}) trained from the cached features in "
        f"{trained.card['fit_seconds']:.2f} s: {scores.method} accuracy {scores.accuracy:.3f}, "
        f"macro-F1 {scores.macro_f1:.3f}; confusion matrix: {trained.path / 'confusion.png'}"
    )
    for prediction in predictions:
        confidence = prediction.probabilities[prediction.label]
        click.echo(
            f"held-out {Path(prediction.source).name}: predicted {prediction.label} "
            f"(p={confidence:.3f}); nearest labels "
            f"{', '.join(hit.label or '-' for hit in prediction.neighbours)}"
        )
    click.echo(f"inspect it with: lookalike info --collection {report.collection}")


def _register_commands() -> None:
    from lookalike.cli.classify import classifiers, predict, probe, train
    from lookalike.cli.collection import info, remove
    from lookalike.cli.distill import distill
    from lookalike.cli.finetune import advise, finetune
    from lookalike.cli.index import index
    from lookalike.cli.search import dedup, search
    from lookalike.cli.serve import serve

    commands = (
        info,
        remove,
        index,
        search,
        dedup,
        train,
        predict,
        probe,
        classifiers,
        serve,
        finetune,
        advise,
        distill,
    )
    for command in commands:
        main.add_command(command)


_register_commands()
