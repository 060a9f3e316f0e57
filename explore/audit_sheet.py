"""A contact sheet of an audit's top findings: a row of likely label errors, one of outliers, and
rows of leaked pairs (each pair side by side)."""

from __future__ import annotations

from pathlib import Path

from lookalike.index.sheet import Cell, contact_sheet

from .audit import AuditReport

PER_ROW = 8


def audit_sheet(report: AuditReport, out: str | Path, per_row: int = PER_ROW) -> Path | None:
    """Draw the report's first findings of each part to a PNG at `out`; None when it found
    nothing to draw."""
    rows: list[list[Cell]] = []
    titles: list[str] = []
    if report.label_errors is not None and len(report.label_errors):
        rows.append(
            [
                (
                    report.path(row["id"]),
                    f"#{row['id']} {row['label']}\n-> {row['suggested']} p={row['p_label']:.3f}",
                )
                for row in report.label_errors.rows(per_row)
            ]
        )
        titles.append(
            "likely label errors (given -> suggested; p: the given label's CV probability)"
        )
    if report.outliers is not None and len(report.outliers.ids):
        rows.append(
            [
                (report.path(row["id"]), f"#{row['id']} d={row['score']:.3f}\nz={row['z']:.1f}")
                for row in report.outliers.rows(per_row)
            ]
        )
        titles.append(f"outliers (mean distance to the {report.outliers.k} nearest)")
    if report.leaks is not None and len(report.leaks):
        cells: list[Cell] = []
        for row in report.leaks.rows(per_row // 2):
            cells.append(
                (report.path(row["id"]), f"#{row['id']} {row['split']}\nd={row['distance']:.3f}")
            )
            cells.append((report.path(row["other_id"]), f"#{row['other_id']} {row['other_split']}"))
        rows.append(cells)
        titles.append("near-duplicates across splits (pairs)")
    if not rows:
        return None
    return contact_sheet(rows, out, titles=titles)
