"""An audit report as text for people: each part's counts and its first findings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .audit import AuditReport


def report_lines(report: AuditReport, top: int) -> list[str]:
    lines = [f"audit of {report.collection}: {report.items} items"]
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
                f"  {row['rank']:>4} {row['id']:>8} {row['label'][:14]:<14} "
                f"{row['suggested'][:14]:<14} {row['quality']:>7.3f}  {report.path(row['id'])}"
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
                f"{report.path(row['id'])}"
            )
    if report.leaks is not None:
        leaks = report.leaks
        how = "calibrated" if leaks.calibration else "given"
        splits = ", ".join(f"{name} {count}" for name, count in leaks.splits.items())
        lines.append(
            f"leaks: {len(leaks)} near-duplicate pairs across splits ({splits}; from "
            f"{leaks.source}) within {leaks.threshold:.3f} ({how})"
        )
        for row in leaks.rows(top):
            lines.append(
                f"  {row['distance']:.4f}  {row['split']} #{row['id']} {report.path(row['id'])}"
                f"  <->  {row['other_split']} #{row['other_id']} {report.path(row['other_id'])}"
            )
    lines += [f"{part.replace('_', ' ')}: skipped: {why}" for part, why in report.skipped.items()]
    return lines
