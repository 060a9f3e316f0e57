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
    from lookalike.index import Filters

    return Filters(tuple(labels), path_prefix)


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

    from lookalike.index import Searcher
    from lookalike.index.sheet import contact_sheet

    if not images and not ids:
        raise click.UsageError("give image files and/or --id")
    searcher = Searcher.open(collection_dir, layer, store=store)
    options = {"threshold": threshold, "filters": _filters(labels, path_prefix)}
    queries: list[tuple[str, str | None]] = []
    results = []
    if images:
        results += searcher.search_images(images, k, **options)
        queries += [(str(p), str(p)) for p in images]
    if ids:
        results += searcher.search_ids(ids, k, **options)
        queries += [(f"id {i}", searcher.item(i)["path"]) for i in ids]
    for (name, _), hits in zip(queries, results, strict=True):
        if as_json:
            click.echo(json.dumps({"query": name, "hits": [h.to_dict() for h in hits]}))
            continue
        click.echo(f"query {name}: {len(hits)} neighbours")
        click.echo(f"  {'rank':>4}  {'id':>8}  {'distance':>8}  {'label':<12}  path")
        for rank, hit in enumerate(hits, 1):
            click.echo(
                f"  {rank:>4}  {hit.id:>8}  {hit.distance:>8.4f}  {hit.label or '-'!s:<12}  {hit.path}"
            )
    if sheet:
        rows = [
            [
                (path, "query"),
                *[(h.path, f"#{h.id} d={h.distance:.3f}\n{h.label or ''}") for h in hits],
            ]
            for (_, path), hits in zip(queries, results, strict=True)
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

    from lookalike.index import Searcher, find_duplicates
    from lookalike.index.calibrate import calibrated_threshold
    from lookalike.index.sheet import contact_sheet

    searcher = Searcher.open(collection_dir, layer, store=store)
    filters = _filters(labels, path_prefix)
    if threshold is None:
        calibration, reused, _ = calibrated_threshold(
            searcher, recalibrate=recalibrate, filters=filters, progress=not quiet
        )  # one not stored is logged as a warning
        threshold = calibration.threshold
        click.echo(
            "\n".join(calibration.lines()) + ("\n  (stored calibration, reused)" if reused else "")
        )
    found = find_duplicates(searcher, threshold, filters, progress=not quiet)
    click.echo(_summary(found, threshold))
    for number, members in enumerate(found.clusters[:show]):
        click.echo(
            f"cluster {number} ({len(members)}): "
            + ", ".join(searcher.item(i)["path"] for i in members[:5])
        )
    if out:
        table = found.cluster_table(searcher)
        if out.suffix == ".parquet":
            pq.write_table(table, out)
        else:
            pacsv.write_csv(table, out)
        click.echo(f"clusters written to {out}")
    if sheet and found.clusters:
        rows = [
            [(searcher.item(i)["path"], f"#{i}") for i in members[:8]]
            for members in found.clusters[:show]
        ]
        click.echo(f"contact sheet: {contact_sheet(rows, sheet)}")


def _summary(found, threshold: float) -> str:
    """Pairs, clusters and items in them, and the groups of identical items among them."""
    in_clusters = sum(len(c) for c in found.clusters)
    exact = f" ({len(found.exact)} groups of identical items among them)" if found.exact else ""
    return (
        f"{found.pair_count} pairs within {threshold:.3f}; {len(found.clusters)} clusters, "
        f"{in_clusters} items{exact}"
    )
