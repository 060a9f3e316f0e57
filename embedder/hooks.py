"""Forward hooks on named layers, owned by one object that removes them, and pooling of their outputs."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from lookalike.errors import InvalidArgument

from .spec import POOLINGS

GEM_P = 3.0
GRID_CELLS = 3


class FeatureHooks:
    """Capture the outputs of named submodules during a forward pass.

    Use as a context manager (or call `remove()`); `pop()` hands over and clears what the last
    forward captured, so nothing outlives its batch.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        for name in layers:
            if name not in modules or not name:
                raise InvalidArgument(unknown_layer_message(name, modules))
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._capture(name)) for name in layers
        ]

    def _capture(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            self._outputs[name] = output[0] if isinstance(output, tuple | list) else output

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """The captured outputs of the last forward, by layer name; clears them."""
        outputs, self._outputs = self._outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def unknown_layer_message(name: str, modules: dict[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    top = [n for n in names if "." not in n]
    return (
        f"unknown layer {name!r}.{hint} Top-level layers: {', '.join(top)}; "
        f"{len(names)} hookable layers in all (`lookalike layers BACKBONE` lists them)."
    )


def pool(features: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce a layer output to one vector per image.

    (B, C) passes through; (B, C, H, W) maps pool over H and W; (B, N, C) token sequences pool over
    the tokens (``cls`` takes the first token).
    """
    if how not in POOLINGS:
        raise InvalidArgument(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")
    if features.ndim == 2:
        return features
    if features.ndim == 3:
        if how == "grid":
            raise InvalidArgument("pooling 'grid' needs a spatial map (B, C, H, W), got tokens")
        if how == "cls":
            return features[:, 0]
        return _reduce(features, how, dims=(1,))
    if how == "cls":
        raise InvalidArgument("pooling 'cls' needs a token sequence (B, N, C), got a spatial map")
    if how == "grid":
        return grid_pool(features)
    return _reduce(features.flatten(2), how, dims=(2,))


def grid_pool(features: torch.Tensor, cells: int = GRID_CELLS) -> torch.Tensor:
    """A spatial map averaged over a `cells` x `cells` grid, each cell's vector L2-normalised,
    side by side (B, C * cells**2): where things are, not only what is there. Near-duplicate
    search uses it: a copy keeps the layout (a crop or a few degrees move it a little), while a
    distinct photo of the same kind of scene does not (on real photos with planted copies,
    pair F1 0.98 against 0.85 for the globally pooled embedding)."""
    height, width = int(features.shape[-2]), int(features.shape[-1])  # constants in an export
    means = _cell_means(height, width, cells).to(features.device)
    cells_map = features.float().flatten(2) @ means.T  # (B, C, cells**2)
    return F.normalize(cells_map, dim=1).transpose(1, 2).flatten(1)


@functools.lru_cache(maxsize=16)
def _cell_means(height: int, width: int, cells: int) -> torch.Tensor:
    """(cells**2, height * width): row r averages cell r's positions, with the bins of
    `adaptive_avg_pool2d` (a matrix product, because ONNX export refuses that op here); made
    once per map size, not per batch (callers never write to it)."""
    means = torch.zeros(cells, cells, height, width)
    for row in range(cells):
        top, bottom = row * height // cells, -(-(row + 1) * height // cells)
        for column in range(cells):
            left, right = column * width // cells, -(-(column + 1) * width // cells)
            means[row, column, top:bottom, left:right] = 1.0 / ((bottom - top) * (right - left))
    return means.reshape(cells * cells, height * width)


def _reduce(features: torch.Tensor, how: str, dims: tuple[int, ...]) -> torch.Tensor:
    if how == "avg":
        return features.mean(dim=dims)
    if how == "max":
        return features.amax(dim=dims)
    clamped = features.float().clamp(min=1e-6).pow(GEM_P)
    return clamped.mean(dim=dims).pow(1.0 / GEM_P)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors.float(), dim=1)


def trace_outputs(
    model: nn.Module, names: Sequence[str], image_size: int
) -> dict[str, tuple[object, tuple[int, ...]]]:
    """What each named module of `model` outputs for one blank image: (the output, its shape
    without the batch), in the order they ran. The one layer-tracing pass (`list_layers`, the
    probe's candidate layers)."""
    modules = dict(model.named_modules())
    traced: dict[str, tuple[object, tuple[int, ...]]] = {}

    def record(layer: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            first = output[0] if isinstance(output, tuple | list) else output
            if isinstance(first, torch.Tensor) and layer not in traced:
                traced[layer] = (first, tuple(first.shape[1:]))

        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return traced
