"""Turn a decoded image into the tensor a backbone expects, from the recorded `Preprocess` recipe."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from .spec import Preprocess


def build_transform(preprocess: Preprocess) -> T.Compose:
    """Resize the short side, centre-crop, to float in [0, 1], normalise (as torchvision's presets)."""
    return T.Compose(
        [
            T.Resize(
                preprocess.resize,
                interpolation=InterpolationMode(preprocess.interpolation),
                antialias=True,
            ),
            T.CenterCrop(preprocess.crop),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(preprocess.mean), std=list(preprocess.std)),
        ]
    )


def to_batch(images: list[Image.Image], preprocess: Preprocess) -> torch.Tensor:
    """Preprocess already-decoded RGB images into one (B, 3, crop, crop) batch."""
    transform = build_transform(preprocess)
    return torch.stack([transform(image) for image in images])
