"""Which layer transfers best: the same linear probe (and kNN) over several layers and poolings."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from torch import nn
from tqdm.auto import tqdm

from lookalike.checks import PROBE, check_ranges
from lookalike.embedder.build import get_backbone, spec_arguments
from lookalike.embedder.hooks import pool, trace_outputs
from lookalike.embedder.pipeline import DataLoaderPipeline
from lookalike.embedder.sources import ImageSource, walk_images
from lookalike.embedder.spec import OUTPUT_LAYER, split_layer
from lookalike.embedder.stages import stage_outputs
from lookalike.index.knn import self_neighbours
from lookalike.store.collection import Collection

from .labels import LabelledItems, check_trainable, labelled_sources
from .models import make_model
from .plots import probe_png

DEFAULT_POOLINGS = ("avg", "max", "gem")
DEFAULT_SAMPLE = 2000
MAX_PROBED_LAYERS = 4


@dataclass(frozen=True)
class ProbeRow:
    layer: str
    pooling: str
    dim: int
    accuracy: float
    accuracy_std: float
    knn_recall: float

    @property
    def key(self) -> str:
        return self.layer if self.layer == OUTPUT_LAYER else f"{self.layer}/{self.pooling}"


@dataclass
class ProbeReport:
    """Rows best first (by linear-probe CV accuracy), over `n_items` labelled images."""

    rows: list[ProbeRow]
    n_items: int
    classes: list[str]
    folds: int
    seconds: float

    @property
    def best(self) -> ProbeRow:
        return self.rows[0]

    def table(self) -> str:
        lines = [
            f"{'layer':<24} {'pooling':<7} {'dim':>5} {'probe acc':>9} {'± std':>6} {'kNN R@1':>8}"
        ]
        for row in self.rows:
            lines.append(
                f"{row.layer:<24} {row.pooling:<7} {row.dim:>5} {row.accuracy:>9.3f} "
                f"{row.accuracy_std:>6.3f} {row.knn_recall:>8.3f}"
            )
        lines.append(
            f"{self.n_items} images, {len(self.classes)} classes, logistic-regression probe with "
            f"stratified {self.folds}-fold CV; {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def chart(self) -> bytes:
        return probe_png(
            [row.key for row in self.rows],
            [row.accuracy for row in self.rows],
            [row.knn_recall for row in self.rows],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [row.__dict__ | {"key": row.key} for row in self.rows],
            "n_items": self.n_items,
            "classes": self.classes,
            "folds": self.folds,
            "seconds": round(self.seconds, 2),
        }


def knn_recall_at_1(features: np.ndarray, targets: np.ndarray) -> float:
    """Leave-one-out: how often an item's nearest other item (cosine) has the same label."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    nearest = self_neighbours(unit.astype(np.float32), 1)[:, 0]
    return float((targets[nearest] == targets).mean())


def probe_features(
    features: Mapping[tuple[str, str], np.ndarray],
    targets: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> list[ProbeRow]:
    """Fit the same logistic-regression probe on each (layer, pooling) feature set; best first.
    With `progress`, a bar counts the fits (feature sets x folds): on thousands of images of
    wide layers they take most of a probe's time."""
    check_ranges({"folds": folds, "seed": seed}, PROBE)
    targets = np.asarray(targets)
    min_count = int(np.bincount(targets).min())
    splits = max(2, min(folds, min_count))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    rows = []
    total = len(features) * splits
    with tqdm(total=total, unit="fit", desc="fitting probes", disable=not progress) as bar:
        for (layer, pooling), x in features.items():
            bar.set_postfix_str(f"{layer}/{pooling}")
            probe = make_model("logreg", len(targets), min_count, seed)
            scores = _cross_validated(probe, x, targets, cv, bar)
            rows.append(
                ProbeRow(
                    layer=layer,
                    pooling=pooling,
                    dim=int(x.shape[1]),
                    accuracy=round(float(scores.mean()), 4),
                    accuracy_std=round(float(scores.std()), 4),
                    knn_recall=round(knn_recall_at_1(x, targets), 4),
                )
            )
    return sorted(rows, key=lambda row: (-row.accuracy, -row.knn_recall))


def _cross_validated(
    probe: Any, x: np.ndarray, targets: np.ndarray, cv: StratifiedKFold, bar: tqdm
) -> np.ndarray:
    """Accuracy on each fold (what `cross_val_score` gives), one tick of `bar` a fit."""
    scores = []
    for train, test in cv.split(x, targets):
        scores.append(clone(probe).fit(x[train], targets[train]).score(x[test], targets[test]))
        bar.update()
    return np.array(scores)


def candidate_layers(
    model: nn.Module, image_size: int, limit: int = MAX_PROBED_LAYERS
) -> list[str]:
    """The deepest `limit` stage outputs (`embedder.stages`: the one definition of a backbone's
    stages, shared with fine-tuning) that hold spatial maps (or tokens), in forward order."""
    traced = trace_outputs(model, stage_outputs(model), image_size)
    ranked = [name for name, (output, _) in traced.items() if _is_map(output)]
    return ranked[-limit:]


def _is_map(output: object) -> bool:
    """A spatial map with more than one position, or a sequence of more than one token."""
    if not isinstance(output, torch.Tensor):
        return False
    if output.dim() == 4:
        return output.shape[-1] * output.shape[-2] > 1
    return output.dim() == 3 and output.shape[1] > 1


def _stratified_sample(labelled: LabelledItems, size: int, seed: int) -> np.ndarray:
    """Row numbers of at most `size` items, every class kept in proportion (at least 2 each)."""
    if len(labelled) <= size:
        return np.arange(len(labelled))
    rng = np.random.default_rng(seed)
    rows = []
    for label in labelled.classes:
        members = np.flatnonzero(labelled.labels == label)
        take = max(2, round(size * len(members) / len(labelled)))
        rows.append(rng.choice(members, min(take, len(members)), replace=False))
    return np.sort(np.concatenate(rows))


def embed_for_probe(
    sources: Sequence[ImageSource],
    embedder: Mapping[str, Any],
    layers: Sequence[str] | None,
    poolings: Sequence[str],
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[dict[tuple[str, str], np.ndarray], list[str]]:
    """One forward pass per batch, every candidate layer pooled every way: features and labels."""
    arguments = {**embedder, "normalize": False}
    arguments.pop("layers", None)
    arguments.pop("pooling", None)
    pieces: dict[tuple[str, str], list[np.ndarray]] = {}
    labels: list[str] = []
    pipeline = DataLoaderPipeline(batch_size=batch_size)
    with tqdm(total=len(sources), unit="img", desc="probing", disable=not progress) as bar:
        bar.set_postfix_str("loading the backbone")
        backbone = _probe_backbone(arguments, layers)
        bar.set_postfix_str("")
        with backbone:
            for batch in pipeline.batches(sources, backbone.spec.preprocess):
                bar.update(len(batch.items) + len(batch.failures))
                if not batch.items:
                    continue
                labels += [item["label"] for item in batch.items]
                _add_features(backbone.feature_maps(batch.pixels), poolings, pieces)
    return {key: np.concatenate(parts) for key, parts in pieces.items()}, labels


def _add_features(
    feature_maps: Mapping[str, torch.Tensor],
    poolings: Sequence[str],
    pieces: dict[tuple[str, str], list[np.ndarray]],
) -> None:
    """A batch's features, each layer pooled every way, appended to `pieces[(layer, pooling)]`."""
    for layer, maps in feature_maps.items():
        module, own = split_layer(layer, "")  # `blocks.5/gem`: that pooling only
        ways = (own,) if own else poolings if maps.dim() > 2 else ("-",)
        for way in ways:
            vector = maps if way == "-" else pool(maps, way)
            pieces.setdefault((module, way), []).append(vector.float().cpu().numpy())


def _probe_backbone(arguments: dict[str, Any], layers: Sequence[str] | None) -> Any:
    """The backbone hooked at `layers` and its output (default: `candidate_layers`)."""
    if not layers:
        probe_model = get_backbone(**arguments)
        layers = candidate_layers(probe_model.model, probe_model.spec.preprocess.crop)
        probe_model.close()
    return get_backbone(**arguments, layers=[*layers, OUTPUT_LAYER])


def probe(
    sources: Sequence[ImageSource],
    embedder: Mapping[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    poolings: Sequence[str] = DEFAULT_POOLINGS,
    folds: int = 5,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    progress: bool = True,
) -> ProbeReport:
    """Probe labelled image files (a stratified sample of at most `sample`) with `embedder`."""
    check_ranges({"folds": folds, "sample": sample, "seed": seed}, PROBE)
    started = time.perf_counter()
    labelled = LabelledItems(
        np.arange(len(sources)), np.asarray([s.label for s in sources], dtype=object), "sources"
    )
    check_trainable(labelled)
    chosen = [sources[row] for row in _stratified_sample(labelled, sample, seed)]
    features, labels = embed_for_probe(chosen, embedder or {}, layers, poolings, progress=progress)
    found = LabelledItems(np.arange(len(labels)), np.asarray(labels, dtype=object), "decoded")
    check_trainable(found)
    targets = np.searchsorted(found.classes, found.labels.astype(str))
    rows = probe_features(features, targets, folds, seed, progress)
    splits = max(2, min(folds, int(np.bincount(targets).min())))
    return ProbeReport(rows, len(targets), found.classes, splits, time.perf_counter() - started)


def probe_folder(folder: str | Path, **options: Any) -> ProbeReport:
    """Probe a folder with one sub-folder per class."""
    sources = [s for s in walk_images([folder], labels_from_folders=True) if s.label]
    return probe(sources, **options)


def probe_collection(
    collection: Collection | str | Path, labels: str | Path | None = None, **options: Any
) -> ProbeReport:
    """Probe the labelled images of a collection with the collection's own backbone and weights."""
    if not isinstance(collection, Collection):
        collection = Collection.open(collection)
    sources = labelled_sources(collection, labels)
    embedder = {k: v for k, v in spec_arguments(collection.spec).items() if k != "normalize"}
    return probe(sources, embedder={**embedder, **options.pop("embedder", {})}, **options)
