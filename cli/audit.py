"""`lookalike audit`: likely label errors, outliers and near-duplicates across splits."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lookalike.cli.options import COLLECTION, QUIET, FiniteRange

PARTS = ("label_errors", "outliers", "leaks")  # `explore.audit.PARTS`, without importing it


@click.command()
@COLLECTION
@click.option(
    "--labels",
    "labels_file",
    metavar="FILE",
    help="Labels to audit: a CSV or parquet with an id or path column and a label column "
    "(default: the folder labels recorded at embed time).",
)
@click.option(
    "--splits",
    "splits_file",
    metavar="FILE",
    help="Splits for leakage: a CSV or parquet with an id or path column and a split column "
    "(default: folders named train, test, val on each item's path).",
)
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    help="Run only this part. Repeatable (default: all three).",
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="The label-error classifier's layer(s) (default: auto, chosen as `train` chooses).",
)
@click.option("--model", default="logreg", show_default=True, help="The label-error classifier.")
@click.option(
    "-k",
    "--k",
    default=10,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Outliers: neighbours whose mean distance scores an item.",
)
@click.option(
    "--threshold",
    type=FiniteRange(min=0),
    help="Leaks: pairs within this distance (default: dedup's calibrated threshold).",
)
@click.option(
    "--top",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Findings shown a part.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write every ranked item of every part as .parquet (or .csv).",
)
@click.option(
    "--sheet", type=click.Path(path_type=Path), help="Contact sheet PNG of the top findings."
)
@QUIET
def audit(
    collection_dir, labels_file, splits_file, parts, layers, model, k, threshold, top, as_json,
    out, sheet, quiet,
) -> None:  # fmt: skip
    """Audit a collection: likely label errors (cleanlab on cross-validated probabilities),
    outliers (mean distance to the k nearest items) and near-duplicates across splits."""
    from lookalike.durable import store_if_possible
    from lookalike.explore.audit import audit_collection
    from lookalike.explore.audit_sheet import audit_sheet
    from lookalike.explore.audit_store import save_report
    from lookalike.explore.audit_text import report_lines
    from lookalike.store.collection import Collection

    if out and out.suffix not in (".parquet", ".csv"):
        raise click.UsageError(f"--out {out}: give a .parquet or .csv file")
    report = audit_collection(
        collection_dir,
        labels=labels_file,
        splits=splits_file,
        parts=parts or PARTS,
        layer=list(layers) or "auto",
        model=model,
        k=k,
        threshold=threshold,
        progress=not quiet,
    )
    asked = {"parts": list(parts or PARTS), "k": k, "threshold": threshold, "model": model}
    asked["layer"] = list(layers) or "auto"
    store_if_possible(  # the report is printed all the same; one not stored is logged
        lambda: save_report(Collection.open(collection_dir), report, asked),
        f"the audit of {collection_dir}",
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(top)))
    else:
        click.echo("\n".join(report_lines(report, top)))
    if out:
        _write_table(report.table(), out)
        if not as_json:
            click.echo(f"findings written to {out}")
    if sheet:
        drawn = audit_sheet(report, sheet)
        if not as_json:
            click.echo(f"contact sheet: {drawn}" if drawn else "contact sheet: nothing to draw")


def _write_table(table, out: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        pacsv.write_csv(table, out)
    else:
        pq.write_table(table, out)
