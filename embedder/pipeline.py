"""Batch extraction: read and decode image files in DataLoader workers, embed batches on the device.

The pipeline is a swappable piece: anything with `batches(sources, preprocess)` yielding `Batch`es
slots into the bulk job (a GPU fast path later, the CPU DataLoader path now).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from lookalike.errors import BadImage

from .preprocess import build_transform
from .sources import DEFAULT_MAX_PIXELS, ImageSource, decode_image, sha256_hex
from .spec import Preprocess


@dataclass
class Batch:
    """Preprocessed pixels of the images that decoded, their item rows, and the files that did not."""

    pixels: torch.Tensor | None
    items: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


class Pipeline(Protocol):
    def batches(
        self, sources: Sequence[ImageSource], preprocess: Preprocess
    ) -> Iterator[Batch]: ...


class ImageFiles(Dataset):
    """Reads, hashes, decodes and preprocesses one file per index; a bad file becomes a failure row."""

    def __init__(
        self, sources: Sequence[ImageSource], preprocess: Preprocess, max_pixels: int
    ) -> None:
        self.sources = sources
        self.transform = build_transform(preprocess)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = self.sources[index]
        row: dict[str, Any] = {"path": str(source.path), "label": source.label}
        try:
            stat = source.path.stat()
            data = source.path.read_bytes()
        except OSError as error:
            return {"failure": {**row, "reason": f"cannot read: {error.strerror or error}"}}
        row.update(bytes=len(data), mtime_ns=stat.st_mtime_ns)
        try:
            image = decode_image(data, self.max_pixels)
        except BadImage as error:
            return {"failure": {**row, "reason": str(error)}}
        row.update(sha256=sha256_hex(data), width=image.width, height=image.height)
        return {"item": row, "pixels": self.transform(image)}


def collate(samples: list[dict[str, Any]]) -> Batch:
    good = [s for s in samples if "item" in s]
    pixels = torch.stack([s["pixels"] for s in good]) if good else None
    return Batch(
        pixels=pixels,
        items=[s["item"] for s in good],
        failures=[s["failure"] for s in samples if "failure" in s],
    )


def default_num_workers() -> int:
    """Decode workers: one core left for the model, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


class DataLoaderPipeline:
    """The CPU path: PIL decode + torchvision transforms in DataLoader worker processes."""

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pin_memory: bool = False,
    ) -> None:
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.max_pixels = max_pixels
        self.pin_memory = pin_memory

    def batches(self, sources: Sequence[ImageSource], preprocess: Preprocess) -> Iterator[Batch]:
        workers = self.num_workers if len(sources) > self.batch_size else 0
        loader = DataLoader(
            ImageFiles(sources, preprocess, self.max_pixels),
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            prefetch_factor=4 if workers else None,
        )
        yield from loader
