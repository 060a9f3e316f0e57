"""Turn a decoded image into the tensor a backbone expects, from the recorded `Preprocess` recipe.

`build_transform` is the reference (torchvision's presets). `to_array` computes the same pixels
about twice as fast: when the image shrinks by `BOX_MIN_SCALE` or more, one PIL resize of only the
centre-crop region (PIL clamps its filter window to the whole image, so this is resize-then-crop up to
one grey level on a few pixels), then a fused NumPy normalise without torch's per-op overhead.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from .sources import DEFAULT_MAX_PIXELS, DecodedImage, decode
from .spec import Preprocess

# torchvision's own mapping for PIL inputs (torchvision.transforms.functional.pil_modes_mapping)
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
# Nearer 1 the box resize drifts from resize-then-crop by several grey levels (measured with Pillow
# 13 on real photos: 1.05x up to 6 levels, 1.13x and more at most 1 level on under 0.5 % of pixels).
BOX_MIN_SCALE = 1.125


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


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """torchvision's `Resize(int)` output size: the short side to `short_side`, the long truncated."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def crop_offsets(width: int, height: int, crop: int) -> tuple[int, int] | None:
    """torchvision's `CenterCrop` (left, top), or None when the crop is larger and would pad."""
    if crop > width or crop > height:
        return None
    return round((width - crop) / 2.0), round((height - crop) / 2.0)


def to_array(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """One RGB image as a normalised (3, crop, crop) float32 array, as `build_transform` makes it."""
    resample = PIL_FILTERS.get(preprocess.interpolation)
    new_width, new_height = resized_size(image.width, image.height, preprocess.resize)
    offsets = crop_offsets(new_width, new_height, preprocess.crop)
    if resample in (None, Image.Resampling.NEAREST) or offsets is None:
        return build_transform(preprocess)(image).numpy()
    left, top = offsets
    crop = preprocess.crop
    scale_x, scale_y = image.width / new_width, image.height / new_height
    if min(scale_x, scale_y) >= BOX_MIN_SCALE:
        box = (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)
        cropped = image.resize((crop, crop), resample, box=box)
    else:
        resized = image.resize((new_width, new_height), resample)
        cropped = resized.crop((left, top, left + crop, top + crop))
    return normalize(np.asarray(cropped, np.uint8), preprocess)


def normalize(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 to (3, H, W) float32: scaled to [0, 1], minus mean, over std, in one pass."""
    std = np.asarray(preprocess.std, np.float32)
    scale = (1.0 / (255.0 * std))[:, None, None]
    shift = (np.asarray(preprocess.mean, np.float32) / std)[:, None, None]
    planes = np.empty((3, *pixels.shape[:2]), np.float32)
    np.multiply(pixels.transpose(2, 0, 1), scale, out=planes)  # 7x faster than astype, then *=
    planes -= shift
    return planes


def to_batch(images: list[Image.Image], preprocess: Preprocess) -> torch.Tensor:
    """Preprocess already-decoded RGB images into one (B, 3, crop, crop) batch."""
    return torch.from_numpy(np.stack([to_array(image, preprocess) for image in images]))


def image_pixels(
    data: bytes, preprocess: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[DecodedImage, np.ndarray]:
    """The one way from encoded bytes to a model's input: decoded (checked against
    `max_pixels`; `BadImage` if not an image), a JPEG much larger than the input at a reduced
    scale (libjpeg's DCT scaling), then `to_array`. The decoded image (with its full size) and
    its (3, crop, crop) float32 pixels. Bulk jobs, search, uploads, predict, the probe and
    training's validation pass all come through here, so a file gets the same vector whichever
    way it entered a collection."""
    decoded = decode(data, max_pixels, short_side=preprocess.resize)
    return decoded, to_array(decoded.image, preprocess)
