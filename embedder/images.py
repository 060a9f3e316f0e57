"""Images (files or encoded bytes) to vectors, through `preprocess.image_pixels`: the one way
from an image to a model's input, shared with the bulk pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lookalike.errors import BadImage

from .backbone import Backbone
from .preprocess import image_pixels
from .sources import DEFAULT_MAX_PIXELS, read_file

Image = str | Path | bytes


def image_bytes(image: Image) -> bytes:
    """The encoded bytes of an image given as bytes or as a path (a regular file only)."""
    return image if isinstance(image, bytes) else read_file(image).data


def embed_images(
    backbone: Backbone, images: Sequence[Image], max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, np.ndarray]:
    """Every layer of `backbone` for each image, from one forward pass; a bad image raises
    `BadImage` naming it. Each image is preprocessed as soon as it is decoded, so only one
    decoded image is held at a time (sixteen 40-megapixel uploads would otherwise hold 2 GB)."""
    arrays = []
    for number, image in enumerate(images):
        try:
            pixels = image_pixels(image_bytes(image), backbone.spec.preprocess, max_pixels)[1]
        except BadImage as error:
            name = f"image {number + 1}" if isinstance(image, bytes) else str(image)
            raise BadImage(f"{name}: {error}") from None
        arrays.append(pixels)
    return backbone.embed(torch.from_numpy(np.stack(arrays)))
