"""What one bulk run did: the report every executor fills (this process's threads, Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.classify.labels import label_summary, split_label_warning
from lookalike.embedder.sources import IMAGE_EXTENSIONS


@dataclass
class EmbedReport:
    """What one run did. `failed` holds this run's failure records (path, reason, ...)."""

    collection: Path
    found: int
    embedded: int = 0
    skipped_done: int = 0
    skipped_known_bad: int = 0
    changed: int = 0  # files embedded again because they changed (their old items tombstoned)
    removed: int = 0  # items tombstoned because their file left the roots (with `prune`)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "torch"
    startup_seconds: float = 0.0  # starting or joining Ray, apart from `seconds`
    duplicates: int = 0  # paths given again (a listing's later rows): the first one is kept
    labels: dict[str, int] = field(default_factory=dict)  # the found images' labels, counted
    unlabelled_rows: int = 0  # listing rows (with a label column) whose label is empty

    @property
    def warnings(self) -> list[str]:
        """What the user should hear about before training on these labels."""
        warning = split_label_warning(self.labels)
        return [warning] if warning else []

    @property
    def problem(self) -> str | None:
        """Why the run achieved nothing a caller asked for: no image found, or every file this
        run tried failed; None otherwise."""
        if not self.found:
            extensions = " ".join(sorted(IMAGE_EXTENSIONS))
            return f"no image found (looked for {extensions}; hidden files are skipped)"
        tried = self.embedded + len(self.failed)
        if tried and not self.embedded:
            return f"every one of the {tried} files tried failed (see above, and failed.jsonl)"
        return None

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.collection}: {self.found} images found, {self.embedded} embedded "
            f"({self.changed} changed), {self.removed} removed, {self.skipped_done} skipped as "
            f"done, {self.skipped_known_bad} skipped as known-bad, {len(self.failed)} failed, "
            f"{self.duplicates} duplicates dropped (the first row naming a path is kept); "
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s ({self.engine})"
            + (f"; Ray start-up {self.startup_seconds:.1f} s" if self.startup_seconds else "")
        ]
        if self.labels or self.unlabelled_rows:
            labels = f"labels: {label_summary(self.labels) or 'none'}"
            if self.unlabelled_rows:
                labels += f"; {self.unlabelled_rows} rows without a label"
            lines.append(labels)
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The counts (they add up to `found`, with what a cancelled run left), as JSON."""
        return {
            "collection": str(self.collection),
            "found": self.found,
            "embedded": self.embedded,
            "changed": self.changed,
            "removed": self.removed,
            "skipped_done": self.skipped_done,
            "skipped_known_bad": self.skipped_known_bad,
            "failed": len(self.failed),
            "duplicates": self.duplicates,
            "labels": self.labels,
            "unlabelled_rows": self.unlabelled_rows,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "engine": self.engine,
        }
