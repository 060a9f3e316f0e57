"""Batch extraction: read and decode image files in threads (or DataLoader workers), in order.

The pipeline is a swappable piece: anything with `batches(sources, preprocess)` yielding `Batch`es
slots into the bulk job. `ThreadPipeline` is the CPU default: PIL's decoder and resampler, hashlib
and NumPy release the GIL, so decode threads overlap each other and the engine (ONNX Runtime and
torch release it too) without copying pixels between processes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lookalike.errors import BadImage

from .preprocess import image_pixels
from .sources import DEFAULT_MAX_PIXELS, ImageSource, failure_row, item_row, read_source
from .spec import Preprocess

FILE_TIMEOUT_SECONDS = 120.0  # a file read and decoded in longer than this is given up on


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


def load_sample(source: ImageSource, preprocess: Preprocess, max_pixels: int) -> dict[str, Any]:
    """Read, hash, decode and preprocess one file (`image_pixels`): ``{"item", "pixels"}``, or
    ``{"failure"}``. The item row keeps the full image's size."""
    read, failure = read_source(source)
    if read is None:
        return {"failure": failure}
    try:
        decoded, pixels = image_pixels(read.data, preprocess, max_pixels)
    except BadImage as error:
        return {"failure": failure_row(source, str(error), read)}
    mtime = read.stat.st_mtime_ns
    row = item_row(source.path, source.label, read.data, mtime, decoded.width, decoded.height)
    return {"item": row, "pixels": pixels}


class ImageFiles(Dataset):
    """Reads, hashes, decodes and preprocesses one file per index; a bad file becomes a failure row."""

    def __init__(
        self, sources: Sequence[ImageSource], preprocess: Preprocess, max_pixels: int
    ) -> None:
        self.sources = sources
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return load_sample(self.sources[index], self.preprocess, self.max_pixels)


def collate(samples: list[dict[str, Any]]) -> Batch:
    good = [s for s in samples if "item" in s]
    pixels = torch.from_numpy(np.stack([s["pixels"] for s in good])) if good else None
    return Batch(
        pixels=pixels,
        items=[s["item"] for s in good],
        failures=[s["failure"] for s in samples if "failure" in s],
    )


def cpu_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_num_workers() -> int:
    """Decode workers: one core left for the model, at most 8."""
    return max(1, min(8, cpu_cores() - 1))


class ThreadPipeline:
    """The CPU path: read, hash, decode and preprocess in a pool of threads; batches keep file order.

    Up to `prefetch` batches are decoded ahead of the one being embedded; ``num_threads=0``
    decodes in the calling thread. A failed file becomes a failure row in its batch, never dropped.
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        prefetch: int = 2,
        file_timeout: float = FILE_TIMEOUT_SECONDS,
    ) -> None:
        self.batch_size = batch_size
        self.num_threads = cpu_cores() if num_threads is None else num_threads
        self.max_pixels = max_pixels
        self.prefetch = prefetch
        self.file_timeout = file_timeout

    def batches(self, sources: Sequence[ImageSource], preprocess: Preprocess) -> Iterator[Batch]:
        if self.num_threads == 0:  # in the calling thread, as DataLoader's num_workers=0
            for start in range(0, len(sources), self.batch_size):
                chunk = sources[start : start + self.batch_size]
                yield collate([load_sample(s, preprocess, self.max_pixels) for s in chunk])
        else:
            yield from self._threaded(sources, preprocess)

    def _threaded(self, sources: Sequence[ImageSource], preprocess: Preprocess) -> Iterator[Batch]:
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="lookalike-decode")
        waiting = iter(sources)
        pending: deque[tuple[ImageSource, Future]] = deque()
        stuck = 0  # threads left behind in a read that never returned (a hung mount)

        def submit_next() -> None:
            source = next(waiting, None)
            if source is not None:
                future = pool.submit(load_sample, source, preprocess, self.max_pixels)
                pending.append((source, future))

        try:
            for _ in range(self.batch_size * (self.prefetch + 1)):
                submit_next()
            while pending:
                samples = []
                while pending and len(samples) < self.batch_size:
                    source, future = pending.popleft()
                    try:
                        samples.append(future.result(timeout=self.file_timeout))
                    except TimeoutError:
                        stuck += 1
                        samples.append({"failure": self._timed_out(source)})
                    submit_next()
                yield collate(samples)
        finally:  # also when the consumer stops early: queued files are dropped, running ones end
            pool.shutdown(wait=not stuck, cancel_futures=True)

    def _timed_out(self, source: ImageSource) -> dict[str, Any]:
        """The failure row of a file whose read or decode did not end within `file_timeout`."""
        reason = (
            f"cannot read: no answer within {self.file_timeout:g} s (a hung mount?); "
            "its thread is left behind"
        )
        return {"path": str(source.path), "label": source.label, "reason": reason}


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
