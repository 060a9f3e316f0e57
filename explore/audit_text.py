"""An audit report as text for people: each part's counts and its first findings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .audit import AuditReport


def shown(value: object) -> str:
    """`value` as one line of a table: each character that is not printable (a newline, a tab,
    an escape sequence) written as its escape, ``\\n``, so a label or a path cannot break a row."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def report_lines(report: AuditReport, top: int) -> list[str]:
    lines = [f"audit of {shown(report.collection)}: {report.items} items"]
    if report.label_errors is not None:
        errors = report.label_errors
        lines.append(
            f"label errors: {int(errors.flagged.sum())} flagged of {len(errors)} labelled items "
            f"(cleanlab on out-of-sample probabilities: {errors.method})"
        )
        lines.append(
            f"  {'rank':>4} {'id':>8} {'label':<14} {'suggested':<14} {'quality':>7}  path"
        )
        for row in errors.rows(top):
            lines.append(
                f"  {row['rank']:>4} {row['id']:>8} {shown(row['label'])[:14]:<14} "
                f"{shown(row['suggested'])[:14]:<14} {row['quality']:>7.3f}  "
                f"{shown(report.path(row['id']))}"
            )
    if report.outliers is not None:
        outliers = report.outliers
        lines.append(
            f"outliers: {int(outliers.flagged.sum())} flagged of {len(outliers.ids)} items "
            f"(mean distance to the {outliers.k} nearest, layer {outliers.layer})"
        )
        lines.append(f"  {'rank':>4} {'id':>8} {'mean dist':>9} {'z':>6}  path")
        for row in outliers.rows(top):
            lines.append(
                f"  {row['rank']:>4} {row['id']:>8} {row['score']:>9.4f} {row['z']:>6.1f}  "
                f"{shown(report.path(row['id']))}"
            )
    if report.leaks is not None:
        leaks = report.leaks
        how = "calibrated" if leaks.calibration else "given"
        splits = ", ".join(f"{shown(name)} {count}" for name, count in leaks.splits.items())
        lines.append(
            f"leaks: {len(leaks)} near-duplicate pairs across splits ({splits}; from "
            f"{shown(leaks.source)}) within {leaks.threshold:.3f} ({how})"
        )
        for row in leaks.rows(top):
            one = f"{shown(row['split'])} #{row['id']} {shown(report.path(row['id']))}"
            other = f"{shown(row['other_split'])} #{row['other_id']} {shown(report.path(row['other_id']))}"
            lines.append(f"  {row['distance']:.4f}  {one}  <->  {other}")
    lines += [
        f"{part.replace('_', ' ')}: skipped: {shown(why)}" for part, why in report.skipped.items()
    ]
    return lines
