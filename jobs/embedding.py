"""Embedding a list of sources in batches, the one loop every executor runs (this process's
threads, a Ray actor), and the pipeline that decodes for it on each device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from lookalike.embedder.pipeline import Batch, Pipeline, ThreadPipeline
from lookalike.embedder.sources import ImageSource

GPU_BATCH_SIZE = 128
GPU_READ_THREADS = 8  # file reads and hashing ahead of the GPU
CPU_BATCH_SIZE = 8  # measured by bench/embed_bench.py on 2 cores (README "Speed")


def embedded_batches(
    backbone: Any, pipeline: Pipeline, sources: Sequence[ImageSource]
) -> Iterator[tuple[Batch, dict[str, np.ndarray] | None]]:
    """Each decoded batch of `sources`, in order, with its vectors by layer (None when no image
    of the batch decoded). `backbone`: anything with a `spec` and `embed(pixels)` (a `Backbone`,
    or an ONNX export alone)."""
    for batch in pipeline.batches(sources, backbone.spec.preprocess):
        yield batch, (backbone.embed(batch.pixels) if batch.items else None)


def default_pipeline(
    device: torch.device, batch_size: int | None, num_workers: int | None, max_pixels: int
) -> Pipeline:
    """Decode threads on a CPU (they overlap the engine in one process), worker processes on a GPU."""
    if device.type == "cuda":  # JPEGs decoded in batches on the GPU (nvJPEG)
        from lookalike.embedder.device_pipeline import DevicePipeline  # torchvision.io: GPU only

        return DevicePipeline(
            device,
            batch_size=batch_size or GPU_BATCH_SIZE,
            read_threads=num_workers or GPU_READ_THREADS,
            max_pixels=max_pixels,
        )
    return ThreadPipeline(
        batch_size=batch_size or CPU_BATCH_SIZE, num_threads=num_workers, max_pixels=max_pixels
    )
