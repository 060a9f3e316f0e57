"""The `lookalike` command line: parsing and printing only; the work is in the library."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

import click

from lookalike import __version__
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


def _weights(value: str | None) -> str | None:
    return None if value is not None and value.lower() == "none" else value


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-c",
    "--collection",
    "collection_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Collection directory (created on first use).",
)
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
    "--image-size", type=int, help="Crop size override (the resize keeps the weights' ratio)."
)
@click.option(
    "--labels-from-folders",
    is_flag=True,
    help="Label each image by its first sub-folder under the root.",
)
@click.option("--batch-size", type=int, help="Images per batch (default: 4 on CPU, 128 on GPU).")
@click.option(
    "--workers", type=int, help="Decode worker processes (default: cores - 1, at most 8)."
)
@click.option("--device", help="cuda, mps or cpu (default: the best available).")
@click.option(
    "--precision",
    default="auto",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    help="Autocast precision on GPU.",
)
@click.option(
    "--shard-size", default=1024, show_default=True, help="Items per shard (the unit of resume)."
)
@click.option(
    "--retry-failed", is_flag=True, help="Try again files that failed before and have not changed."
)
@click.option(
    "--max-pixels", default=64_000_000, show_default=True, help="Refuse images with more pixels."
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
    shard_size,
    retry_failed,
    max_pixels,
    quiet,
) -> None:
    """Embed every image under IMAGES (folders or files) into a collection; resumable."""
    from lookalike.bulk import embed_images

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
        embedder["weights"] = _weights(weights)
    report = embed_images(
        images,
        collection_dir,
        embedder,
        labels_from_folders=labels_from_folders,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        precision=precision,
        shard_size=shard_size,
        retry_failed=retry_failed,
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
@click.option("--image-size", type=int, help="Input size (default: the weights' crop size).")
@click.option(
    "--filter", "pattern", help="Only layers matching this glob, e.g. 'layer*' or 'blocks.*'."
)
def layers(backbone, weights, image_size, pattern) -> None:
    """List the hookable layers of BACKBONE with their output shapes for one image."""
    from lookalike.embedder import list_layers

    rows = list_layers(backbone, weights=_weights(weights), image_size=image_size)
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
@click.option(
    "-c", "--collection", "collection_dir", required=True, type=click.Path(path_type=Path)
)
def info(collection_dir) -> None:
    """Describe a collection: its embedder spec, size and failures."""
    from lookalike.collection import Collection

    collection = Collection.open(collection_dir)
    spec = collection.spec
    click.echo(f"collection   {collection.path}")
    click.echo(
        f"created      {collection.manifest['created']} (lookalike {collection.manifest['lookalike_version']})"
    )
    click.echo(f"backbone     {spec.backbone} (weights: {spec.weights})")
    click.echo(f"layers       {', '.join(f'{k} ({v})' for k, v in spec.dims.items())}")
    click.echo(f"pooling      {spec.pooling}, normalize={spec.normalize}")
    click.echo(
        f"preprocess   resize {spec.preprocess.resize}, crop {spec.preprocess.crop}, "
        f"{spec.preprocess.interpolation}, mean {spec.preprocess.mean}, std {spec.preprocess.std}"
    )
    click.echo(f"fingerprint  {spec.fingerprint()}")
    click.echo(f"items        {len(collection)} in {len(collection.shards())} shards")
    click.echo(f"failed       {len(collection.failures())} (see failed.jsonl)")


@main.command()
@click.option("--workdir", default="demo-data", show_default=True, type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(workdir, quiet) -> None:
    """Write a small real image set (digits, photos) and embed it with the offline default."""
    from lookalike.demo import run_demo

    report, counts = run_demo(workdir, progress=not quiet)
    click.echo(
        f"wrote {counts['digits']} digit images and {counts['photos']} photos under {workdir / 'images'}"
    )
    click.echo(report.summary())
    click.echo(f"inspect it with: lookalike info --collection {report.collection}")
