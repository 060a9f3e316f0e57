"""`lookalike map`: lay out a collection's embeddings in 2-D (UMAP), store it, draw it."""

from __future__ import annotations

import click

from lookalike.cli.options import COLLECTION, LAYER, QUIET


@click.command("map")
@COLLECTION
@LAYER
@click.option(
    "--png",
    "png_file",
    type=click.Path(dir_okay=False),
    help="Where to draw the map (default: maps/<layer>.png in the collection).",
)
@click.option("--refresh", is_flag=True, help="Lay out every item again, not only new ones.")
@click.option("--neighbours", default=15, show_default=True, type=click.IntRange(2, 200))
@click.option("--min-dist", default=0.1, show_default=True, type=click.FloatRange(0, 1))
@QUIET
def map_command(collection_dir, layer, png_file, refresh, neighbours, min_dist, quiet) -> None:
    """Lay out the collection in 2-D (PCA, then UMAP with a fixed seed) and draw it. Items
    added since are placed on the stored map; the page's Map view shows it."""
    from lookalike.explore.map import MapParams, compute_map, map_path
    from lookalike.explore.map_plot import map_png
    from lookalike.store.collection import Collection

    collection = Collection.open(collection_dir)
    params = MapParams(neighbours=neighbours, min_dist=min_dist)
    report = compute_map(collection, layer, params, refresh=refresh, progress=not quiet)
    click.echo(report.summary())
    png = png_file or map_path(collection.path, report.layer).with_suffix(".png")
    click.echo(f"map: {report.path}\npicture: {map_png(collection, png, report.layer)}")


map = map_command  # the name `lookalike.cli.COMMANDS` looks the command up by
