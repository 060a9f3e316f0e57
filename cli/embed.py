"""`lookalike embed`: bring a collection in step with image folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lookalike.cli.options import collection_option, weights_value
from lookalike.embedder.engines import ENGINES
from lookalike.embedder.sources import PILLOW_PIXEL_LIMIT
from lookalike.embedder.spec import POOLINGS, PRECISIONS


def parse_actors(
    context: click.Context, parameter: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """MIN,MAX (or one number) as two positive ints, MIN <= MAX."""
    if value is None:
        return None
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not 1 <= numbers[0] <= numbers[1]:
        raise click.BadParameter(
            f"expected MIN,MAX with 1 <= MIN <= MAX (or one count), got {value!r}"
        )
    return numbers[0], numbers[1]


@click.command()
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
    type=click.Choice(POOLINGS),
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
    type=click.Choice(PRECISIONS),
    help="Autocast precision on GPU.",
)
@click.option(
    "--engine",
    default="auto",
    show_default=True,
    type=click.Choice(ENGINES),
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
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run as tasks on Ray: alone, a Ray started on this machine; 'auto' or ray://HOST:10001 "
    "joins a cluster (pip install 'lookalike[ray]').",
)
@click.option(
    "--ray-actors",
    callback=parse_actors,
    metavar="MIN,MAX",
    help="Embedding actors on Ray, autoscaled between MIN and MAX (default: 1 to what the "
    "cluster's CPUs or GPUs hold); one number fixes the count.",
)
@click.option(
    "--ray-cpus-per-actor",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="CPUs each Ray actor takes (its ONNX Runtime threads).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON.")
def embed(images, collection_dir, quiet, workers, as_json, **options) -> None:
    """Bring a collection in step with the images under IMAGES (folders, image files, or
    listings: .csv or .parquet files with a 'path' column and an optional 'label'): new and
    changed files embedded, with --prune files gone removed; resumable, and a second run into the
    same collection waits for the first."""
    from lookalike.jobs.bulk import embed_images

    embedder = embedder_options(options)
    ray = ray_options(options.pop("ray_address"), options.pop("ray_actors"),
                      options.pop("ray_cpus_per_actor"))  # fmt: skip
    report = embed_images(
        images,
        collection_dir,
        embedder,
        num_workers=workers,
        progress=not quiet,
        ray=ray,
        **options,
    )
    for failure in report.failed:
        click.echo(f"failed: {failure['path']}: {failure['reason']}", err=True)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    if report.problem:  # nothing to show for the run: a script must not take it for success
        raise click.ClickException(report.problem)


def embedder_options(options: dict) -> dict:
    """The `get_backbone` arguments given (taken out of `options`)."""
    given = {
        "name": options.pop("backbone"),
        "weights": options.pop("weights"),
        "layers": options.pop("layers") or None,
        "pooling": options.pop("pooling"),
        "normalize": options.pop("normalize"),
        "image_size": options.pop("image_size"),
    }
    embedder = {k: v for k, v in given.items() if v is not None}
    if "weights" in embedder:
        embedder["weights"] = weights_value(embedder["weights"])
    return embedder


def ray_options(address: str | None, actors: tuple[int, int] | None, cpus_per_actor: float):
    """`RayOptions` for --ray, or None."""
    from lookalike.jobs.ray_job import RayOptions

    if address is None:
        if actors is not None:
            raise click.UsageError("--ray-actors needs --ray")
        return None
    return RayOptions(address, actors, cpus_per_actor)
