"""The GPU path: JPEGs decoded in batches on the model's device (nvJPEG through
`torchvision.io.decode_jpeg(device="cuda")`), resized, cropped and normalised there too.

Files are read and hashed by a pool of threads one chunk ahead of the device. A file that is not a
JPEG, or that the device decoder refuses, is decoded by Pillow on the CPU (`sources.decode`) and
joins the batch; a file nothing can decode becomes a failure row, never silently dropped. The same
code runs with ``device="cpu"`` (torchvision's libjpeg), which is how the tests check it without a
GPU; on a CPU the `ThreadPipeline` is faster and is the default there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from lookalike.errors import BadImage

from .pipeline import Batch
from .sources import (
    DEFAULT_MAX_PIXELS,
    FileRead,
    ImageSource,
    check_header,
    decode,
    failure_row,
    item_row,
    read_source,
)
from .spec import Preprocess

JPEG_FORMATS = ("JPEG", "MPO")


class DevicePipeline:
    """Batches of preprocessed pixels already on `device`, decoded there where it can."""

    def __init__(
        self,
        device: str | torch.device,
        batch_size: int = 128,
        read_threads: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.read_threads = read_threads
        self.max_pixels = max_pixels

    def batches(self, sources: Sequence[ImageSource], preprocess: Preprocess) -> Iterator[Batch]:
        chunks = [sources[i : i + self.batch_size] for i in range(0, len(sources), self.batch_size)]
        with ThreadPoolExecutor(self.read_threads, thread_name_prefix="lookalike-read") as pool:
            ahead: list[list[Future]] = [
                [pool.submit(_read, s) for s in chunk] for chunk in chunks[:1]
            ]
            for number in range(len(chunks)):
                if number + 1 < len(chunks):  # the next chunk's files load while this one runs
                    ahead.append([pool.submit(_read, s) for s in chunks[number + 1]])
                yield self._batch([future.result() for future in ahead.pop(0)], preprocess)

    def _batch(self, files: list[tuple], preprocess: Preprocess) -> Batch:
        items, failures, images = [], [], []
        jpegs: list[int] = []
        for source, read, failure in files:
            if read is None:
                failures.append(failure)  # unreadable: the row says why
                continue
            try:
                header = check_header(read.data, self.max_pixels)
            except BadImage as error:
                failures.append(failure_row(source, str(error), read))
                continue
            mtime = read.stat.st_mtime_ns
            items.append(
                item_row(source.path, source.label, read.data, mtime, header.width, header.height)
            )
            if header.format in JPEG_FORMATS and _ends_whole(read.data):
                jpegs.append(len(images))  # truncated ones go to Pillow, which refuses them
            images.append(read.data)
        decoded = self._decode(images, jpegs)
        kept = [i for i, image in enumerate(decoded) if not isinstance(image, BadImage)]
        failures += [
            {**items[i], "reason": str(image)}
            for i, image in enumerate(decoded)
            if isinstance(image, BadImage)
        ]
        pixels = [_preprocess(decoded[i], preprocess) for i in kept]
        return Batch(
            pixels=torch.stack(pixels).contiguous(memory_format=torch.channels_last)
            if pixels
            else None,
            items=[items[i] for i in kept],
            failures=failures,
        )

    def _decode(self, images: list[bytes], jpegs: list[int]) -> list[torch.Tensor | BadImage]:
        """(3, H, W) uint8 tensors on the device, upright; a BadImage where nothing decodes."""
        out: list[torch.Tensor | BadImage | None] = [None] * len(images)
        if jpegs:
            try:
                batch = self._decode_jpegs([images[i] for i in jpegs])
                for i, tensor in zip(jpegs, batch, strict=True):
                    out[i] = tensor
            except RuntimeError:
                pass  # one bad file fails the batch call: those left None go one by one below
        for i, image in enumerate(out):
            if image is None:
                out[i] = self._decode_one(images[i], i in jpegs)
        return out  # type: ignore[return-value]

    def _decode_jpegs(self, jpegs: list[bytes]) -> list[torch.Tensor]:
        """One call of the device's JPEG decoder (nvJPEG on CUDA); RuntimeError if any fails."""
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        return decode_jpeg(
            encoded, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True
        )

    def _decode_one(self, data: bytes, is_jpeg: bool) -> torch.Tensor | BadImage:
        if is_jpeg:
            try:
                return self._decode_jpegs([data])[0]
            except RuntimeError:
                pass  # e.g. a CMYK or lossless JPEG the device decoder refuses: Pillow next
        try:
            image = decode(data, self.max_pixels).image
        except BadImage as error:
            return error
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
        return pixels.to(self.device, non_blocking=True)


def _ends_whole(jpeg: bytes) -> bool:
    """Whether a JPEG ends with its end-of-image marker (libjpeg would fill a truncated one grey)."""
    return jpeg.rstrip(b"\0")[-2:] == b"\xff\xd9"


def _read(source: ImageSource) -> tuple[ImageSource, FileRead | None, dict[str, Any] | None]:
    """One file read, or its failure row (threads: file reads release the GIL)."""
    return (source, *read_source(source))


def _preprocess(pixels: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The weights' transform on a (3, H, W) uint8 tensor, on its device."""
    resized = F.resize(
        pixels,
        [preprocess.resize],
        interpolation=InterpolationMode(preprocess.interpolation),
        antialias=True,
    )
    cropped = F.center_crop(resized, [preprocess.crop])
    scaled = F.to_dtype(cropped, torch.float32, scale=True)
    return F.normalize(scaled, mean=list(preprocess.mean), std=list(preprocess.std))
