"""`lookalike search` and `lookalike dedup`: neighbours of images or items, near-duplicate clusters."""

from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.options import COLLECTION, LAYER, STORE, FiniteRange


def filter_options(command):
    """--label and --path-prefix, the same for search and dedup."""
    command = click.option("--path-prefix", help="Only items whose path starts with this.")(command)
    return click.option(
        "--label", "labels", multiple=True, help="Only items with this label. Repeatable."
    )(command)


def _filters(labels, path_prefix):
    from lookalike import service

    return service.filters(labels, path_prefix)


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@COLLECTION
@LAYER
@click.option(
    "--id",
    "ids",
    multiple=True,
    type=click.IntRange(min=0),
    help="Query by stored item id. Repeatable.",
)
@click.option(
    "-k",
    "--k",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Neighbours per query.",
)
@click.option(
    "--threshold",
    type=FiniteRange(min=0),
    help="Only neighbours within this distance (cosine distance on normalised embeddings).",
)
@filter_options
@click.option("--sheet", type=click.Path(path_type=Path), help="Write a contact sheet PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@STORE
def search(
    images, collection_dir, layer, ids, k, threshold, labels, path_prefix, sheet, as_json, store
) -> None:
    """Find the items most like IMAGES (files) and/or stored items (--id)."""
    import json

    from lookalike import service
    from lookalike.index.sheet import contact_sheet

    if not images and not ids:
        raise click.UsageError("give image files and/or --id")
    options = {"threshold": threshold, "filters": _filters(labels, path_prefix)}
    with service.open(collection_dir, layer=layer, store=store) as library:
        results = []
        if images:
            results += library.search_images(images, k, **options)
        if ids:
            results += library.search_ids(ids, k, **options)
    for found in results:
        if as_json:
            click.echo(json.dumps(found.to_dict()))
            continue
        click.echo(f"query {found.query}: {len(found.hits)} neighbours")
        click.echo(f"  {'rank':>4}  {'id':>8}  {'distance':>8}  {'label':<12}  path")
        for rank, hit in enumerate(found.hits, 1):
            click.echo(
                f"  {rank:>4}  {hit.id:>8}  {hit.distance:>8.4f}  {hit.label or '-'!s:<12}  {hit.path}"
            )
    if sheet:
        rows = [
            [
                (found.path, "query"),
                *[(h.path, f"#{h.id} d={h.distance:.3f}\n{h.label or ''}") for h in found.hits],
            ]
            for found in results
        ]
        click.echo(f"contact sheet: {contact_sheet(rows, sheet)}")


@click.command()
@COLLECTION
@LAYER
@click.option(
    "--threshold",
    type=FiniteRange(min=0),
    help="Pairs closer than this distance are duplicates (default: calibrated on the collection).",
)
@click.option(
    "--recalibrate", is_flag=True, help="Calibrate again even if a stored calibration still fits."
)
@filter_options
@click.option("--out", type=click.Path(path_type=Path), help="Write clusters as .csv or .parquet.")
@click.option(
    "--sheet", type=click.Path(path_type=Path), help="Contact sheet PNG of the largest clusters."
)
@click.option(
    "--show",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Clusters to print / draw.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@STORE
def dedup(
    collection_dir,
    layer,
    threshold,
    recalibrate,
    labels,
    path_prefix,
    out,
    sheet,
    show,
    quiet,
    store,
) -> None:
    """Find every pair of near-duplicate items and group them into clusters.

    With no --threshold, the threshold is calibrated on the collection: copies of a sample of
    its images (re-encoded, downscaled, cropped, brightened, rotated) are embedded, and the
    threshold keeps those while staying under the distances between distinct items. The
    calibration is stored in the collection and reused until its item count changes by 25 %.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from lookalike import service
    from lookalike.index.sheet import contact_sheet

    with service.open(collection_dir, layer=layer, store=store) as library:
        report = library.dedup(
            threshold, _filters(labels, path_prefix), recalibrate=recalibrate, progress=not quiet
        )  # a calibration not stored is logged as a warning
        if report.calibration is not None:
            calibration, reused, _ = report.calibration
            click.echo(
                "\n".join(calibration.lines())
                + ("\n  (stored calibration, reused)" if reused else "")
            )
        click.echo(report.summary())
        for number, members in enumerate(report.clusters[:show]):
            click.echo(
                f"cluster {number} ({len(members)}): "
                + ", ".join(report.item(i)["path"] for i in members[:5])
            )
        if out:
            table = report.cluster_table()
            if out.suffix == ".parquet":
                pq.write_table(table, out)
            else:
                pacsv.write_csv(table, out)
            click.echo(f"clusters written to {out}")
        if sheet and report.clusters:
            rows = [
                [(report.item(i)["path"], f"#{i}") for i in members[:8]]
                for members in report.clusters[:show]
            ]
            click.echo(f"contact sheet: {contact_sheet(rows, sheet)}")
