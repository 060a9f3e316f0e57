"""Figures for classifiers and probes, as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

MAX_ANNOTATED_CLASSES = 30


def _png(figure: Figure) -> bytes:
    """Render without pyplot: no global figure state, safe in threads and headless."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def confusion_png(matrix: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """Row-normalised confusion matrix (true class down, predicted across), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(classes) + 2)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    display = ConfusionMatrixDisplay(rates, display_labels=list(classes))
    display.plot(
        ax=axes,
        cmap="Blues",
        colorbar=True,
        include_values=len(classes) <= MAX_ANNOTATED_CLASSES,
        values_format=".2f",
        xticks_rotation="vertical",
    )
    axes.set_title(title)
    return _png(figure)


def probe_png(labels: Sequence[str], accuracy: Sequence[float], knn: Sequence[float]) -> bytes:
    """Horizontal bars: linear-probe CV accuracy and kNN recall@1 of each layer/pooling."""
    order = np.argsort(accuracy)
    positions = np.arange(len(labels))
    figure = Figure(figsize=(7, 0.4 * len(labels) + 1.5))
    axes = figure.subplots()
    axes.barh(positions - 0.2, np.asarray(accuracy)[order], 0.4, label="linear probe CV accuracy")
    axes.barh(positions + 0.2, np.asarray(knn)[order], 0.4, label="kNN recall@1")
    axes.set_yticks(positions, [labels[i] for i in order])
    low = min(min(accuracy), min(knn))
    axes.set_xlim(max(0.0, low - 0.05), 1.0)
    axes.legend(loc="lower right")
    axes.set_title("Which layer transfers best")
    return _png(figure)
