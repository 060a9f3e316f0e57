"""How closely, and how fast, one embedder stands in for another (a distilled student for its teacher).

Agreement is recall@k of the reference's neighbours: on the same images, the mean share of each
image's k nearest neighbours under the reference (cosine, exact, the image itself excluded) that
the candidate's k nearest also holds. Each embedder's neighbours are found in its own space, so the
two need not share a width. Speed is images/s of the model alone on a pre-made batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from lookalike.embedder.backbone import Backbone
from lookalike.embedder.spec import OUTPUT_LAYER
from lookalike.index.knn import self_neighbours

from .images import LabelledImages, eval_transform, loader


def embed_rows(
    backbone: Backbone, images: LabelledImages, batch_size: int, progress: bool = False
) -> np.ndarray:
    """(n, d) float32 output vectors of `backbone`, NaN rows for images that fail to decode."""
    batches = loader(images, eval_transform(backbone.spec.preprocess), batch_size, False, 0)
    vectors = np.full((len(images), backbone.spec.dims[OUTPUT_LAYER]), np.nan, np.float32)
    for batch in tqdm(batches, desc="embedding", unit="batch", disable=not progress, leave=False):
        if len(batch.targets):
            vectors[batch.targets.numpy()] = backbone.embed(batch.pixels)[OUTPUT_LAYER]
    return vectors


def neighbour_recall(teacher: np.ndarray, student: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's `k` nearest neighbours under the teacher (cosine) that the
    student's `k` nearest also holds; rows that are not finite in both are left out."""
    kept = np.isfinite(teacher).all(axis=1) & np.isfinite(student).all(axis=1)
    theirs = self_neighbours(_unit(teacher[kept]), k)
    ours = self_neighbours(_unit(student[kept]), k)
    shared = (theirs[:, :, None] == ours[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class HeldOut:
    """Images a student never trains on, and its teacher's vectors of them: what it is judged on."""

    images: LabelledImages
    teacher: np.ndarray
    k: int = 10
    batch_size: int = 32

    def recall(self, student: Backbone, progress: bool = False) -> float:
        """recall@k of the teacher's neighbours among these images under `student`."""
        vectors = embed_rows(student, self.images, self.batch_size, progress)
        return neighbour_recall(self.teacher, vectors, self.k)


def images_per_second(backbone: Backbone, batch_size: int, batches: int = 2) -> float:
    """Images/s of the model alone on a pre-made batch (one warm-up batch first)."""
    crop = backbone.spec.preprocess.crop
    pixels = torch.randn(batch_size, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    backbone.embed(pixels)
    started = time.perf_counter()
    for _ in range(batches):
        backbone.embed(pixels)  # NumPy out: waits for the device
    return batches * batch_size / (time.perf_counter() - started)


def compare_speed(
    teacher: Backbone, student: Backbone, batch_size: int, rounds: int = 3
) -> tuple[float, float]:
    """(teacher, student) images/s, timed in alternating rounds, the best round of each (the
    machine's other load only ever slows a round down)."""
    teacher_rates, student_rates = [], []
    for _ in range(rounds):
        teacher_rates.append(images_per_second(teacher, batch_size))
        student_rates.append(images_per_second(student, batch_size))
    return max(teacher_rates), max(student_rates)
