"""Which fine-tuning strategy a labelled dataset calls for: its size per class against how well the
frozen features already separate its classes.

The rule (the usual transfer-learning grid: data size x similarity to the pretraining domain, with
the frozen linear probe standing in for similarity):

- separation = (probe accuracy - chance) / (1 - chance), from the default logistic-regression probe
  on the frozen embedding (cross-validated on a stratified sample);
- size: the median images per class, small under 100, large from 1,000;

=============  ==================  ===================  ====================
per class      separation >= 0.85  0.6 to 0.85          under 0.6 (far)
=============  ==================  ===================  ====================
small (<100)   head                head                 partial (top 2)
medium         head                partial (top 2)      partial (top 4)
large (1000+)  partial (top 2)     gradual              full
=============  ==================  ===================  ====================

Few images with features that already separate the classes: training more than a head mostly
overfits. Far from ImageNet, the top stages' features are the least transferable, so they are the
first to unfreeze; with many images, the whole network can move (discriminative rates keep the
early stages close to their pretrained values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lookalike.checks import ADVISE, check_ranges
from lookalike.classify.probing import probe
from lookalike.embedder.registry import DEFAULT_BACKBONE, DEFAULT_WEIGHTS
from lookalike.embedder.sources import ImageSource
from lookalike.embedder.spec import OUTPUT_LAYER

from .images import LabelledImages

SMALL, LARGE = 100, 1000
CLOSE, FAR = 0.85, 0.6
GRID = {  # (size, similarity) -> (strategy, top groups to unfreeze)
    ("small", "close"): ("head", 0),
    ("small", "between"): ("head", 0),
    ("small", "far"): ("partial", 2),
    ("medium", "close"): ("head", 0),
    ("medium", "between"): ("partial", 2),
    ("medium", "far"): ("partial", 4),
    ("large", "close"): ("partial", 2),
    ("large", "between"): ("gradual", 0),
    ("large", "far"): ("full", 0),
}


@dataclass(frozen=True)
class Advice:
    strategy: str
    unfreeze: int
    reason: str
    images: int
    classes: int
    median_per_class: float
    smallest_class: int
    probe_accuracy: float
    separation: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_band(median_per_class: float) -> str:
    return (
        "small" if median_per_class < SMALL else "large" if median_per_class >= LARGE else "medium"
    )


def similarity_band(separation: float) -> str:
    return "close" if separation >= CLOSE else "far" if separation < FAR else "between"


def recommend(
    per_class: dict[str, int], probe_accuracy: float, images: int | None = None
) -> Advice:
    """Advice from class counts and the frozen probe's accuracy (see the module docstring)."""
    counts = np.asarray(list(per_class.values()))
    chance = 1 / len(counts)
    separation = max(0.0, (probe_accuracy - chance) / (1 - chance))
    median = float(np.median(counts))
    size, similarity = size_band(median), similarity_band(separation)
    strategy, unfreeze = GRID[(size, similarity)]
    reason = (
        f"{median:g} images per class (median; {size}) and frozen features that separate the "
        f"classes {'well' if similarity == 'close' else 'partly' if similarity == 'between' else 'poorly'} "
        f"(probe accuracy {probe_accuracy:.3f}, {separation:.2f} of the way from chance to "
        f"perfect): {_why[(size, similarity)]}"
    )
    return Advice(
        strategy, unfreeze, reason, int(images or counts.sum()), len(counts), median,
        int(counts.min()), round(probe_accuracy, 4), round(separation, 4),
    )  # fmt: skip


_why = {
    ("small", "close"): "a new head is enough; training more would mostly overfit",
    ("small", "between"): "too few images to move the backbone safely; train the head",
    ("small", "far"): "the top stages' ImageNet features transfer least: retrain the top two",
    ("medium", "close"): "the features already fit; a head gets nearly all there is",
    ("medium", "between"): "enough images to adapt the top stages",
    ("medium", "far"): "adapt the upper half of the network to the new domain",
    ("large", "close"): "plenty of images: adapting the top stages gains a little more",
    ("large", "between"): "unfreeze from the top, one group an epoch, with smaller early rates",
    ("large", "far"): "plenty of images far from ImageNet: train everything, discriminative rates",
}


def advise(
    images: LabelledImages,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = DEFAULT_WEIGHTS,
    image_size: int | None = None,
    sample: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> Advice:
    """Probe `images` with the frozen backbone (a stratified sample) and recommend a strategy."""
    check_ranges({"image_size": image_size, "sample": sample, "seed": seed}, ADVISE)
    embedder: dict[str, Any] = {"name": backbone, "weights": weights}
    if image_size:
        embedder["image_size"] = image_size
    sources = [
        ImageSource(source.path, images.classes[target])
        for source, target in zip(images.sources, images.targets, strict=True)
    ]
    report = probe(
        sources, embedder, layers=[OUTPUT_LAYER], poolings=("avg",), sample=sample, seed=seed,
        progress=progress,
    )  # fmt: skip
    return recommend(images.per_class(), report.best.accuracy, len(images))
