"""Labelled images for training a backbone: from a folder of class folders or a labelled collection.

Training reads pixels, not cached features: the images are decoded each epoch, with light
augmentation (random resized crop, horizontal flip) in the weights' own normalisation for training
and the exact embedding preprocessing for validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from lookalike.checks import FRACTION
from lookalike.classify.labels import LabelledItems, check_trainable, labelled_sources
from lookalike.embedder.preprocess import image_pixels
from lookalike.embedder.sources import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    decode_image,
    read_file,
    walk_images,
)
from lookalike.embedder.spec import Preprocess
from lookalike.errors import BadImage, InvalidArgument
from lookalike.store.collection import Collection

TRAIN_CROP_SCALE = (0.6, 1.0)  # light: the crops keep most of the object


@dataclass(frozen=True)
class LabelledImages:
    """Image files with class indices into `classes`."""

    sources: tuple[ImageSource, ...]
    targets: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, rows: np.ndarray) -> LabelledImages:
        return LabelledImages(
            tuple(self.sources[row] for row in rows), self.targets[rows], self.classes
        )

    def per_class(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist(), strict=True))


def labelled_images(data: str | Path, labels: str | Path | None = None) -> LabelledImages:
    """A folder with one sub-folder per class, or a collection with labelled items."""
    data = Path(data)
    if (data / "manifest.json").is_file():
        sources = labelled_sources(Collection.open(data), labels)
    else:
        sources = [s for s in walk_images([data], labels_from_folders=True) if s.label]
        if not sources:
            raise InvalidArgument(f"{data} holds no images in class sub-folders")
    labels_array = np.asarray([s.label for s in sources], dtype=object)
    check_trainable(LabelledItems(np.arange(len(sources)), labels_array, str(data)))
    classes = tuple(sorted(set(labels_array.tolist())))
    targets = np.searchsorted(classes, labels_array.astype(str)).astype(np.int64)
    return LabelledImages(tuple(sources), targets, classes)


def stratified_split(
    targets: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): `fraction` of each class held out, at least one each."""
    FRACTION.check("fraction", fraction)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        if len(members) < 2:
            raise InvalidArgument("every class needs at least 2 images to hold one out")
        held.append(members[: max(1, round(fraction * len(members)))])
    validation = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(targets)), validation)
    return train, validation


class TrainPixels:
    """Encoded bytes to augmented pixels in the weights' own normalisation: a light random
    resized crop and a horizontal flip (training only; the validation pass uses `EmbeddingPixels`)."""

    def __init__(self, preprocess: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(
                    preprocess.crop,
                    scale=TRAIN_CROP_SCALE,
                    interpolation=InterpolationMode(preprocess.interpolation),
                    antialias=True,
                ),
                T.RandomHorizontalFlip(),
                T.ToImage(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
            ]
        )

    def __call__(self, data: bytes) -> torch.Tensor:
        return self.transform(decode_image(data, self.max_pixels))


class EmbeddingPixels:
    """Encoded bytes to exactly the pixels the embedder computes (`image_pixels`)."""

    def __init__(self, preprocess: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.preprocess, self.max_pixels = preprocess, max_pixels

    def __call__(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(image_pixels(data, self.preprocess, self.max_pixels)[1])


def train_transform(preprocess: Preprocess) -> TrainPixels:
    return TrainPixels(preprocess)


def eval_transform(preprocess: Preprocess) -> EmbeddingPixels:
    """Exactly the embedding preprocessing."""
    return EmbeddingPixels(preprocess)


class ImageDataset(Dataset):
    """(pixels, target) per image; an image that fails to decode gives None (counted, skipped).
    `transform` takes a file's bytes (`TrainPixels`, `EmbeddingPixels`)."""

    def __init__(self, images: LabelledImages, transform: Any) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int] | None:
        source = self.images.sources[row]
        try:
            pixels = self.transform(read_file(source.path).data)
        except (OSError, BadImage):
            return None
        return pixels, int(self.images.targets[row])


@dataclass
class Batch:
    pixels: torch.Tensor
    targets: torch.Tensor
    skipped: int


def collate(samples: Sequence[tuple[torch.Tensor, int] | None]) -> Batch:
    kept = [s for s in samples if s is not None]
    if not kept:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), len(samples))
    return Batch(
        torch.stack([pixels for pixels, _ in kept]),
        torch.tensor([target for _, target in kept]),
        len(samples) - len(kept),
    )


def loader(
    images: LabelledImages,
    transform: Any,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int = 0,
) -> DataLoader:
    """Batches in an order (and worker seeds) fixed by `seed`: a resumed epoch repeats exactly."""
    return DataLoader(
        ImageDataset(images, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
