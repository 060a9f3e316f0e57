"""A frozen backbone: classifier replaced by Identity, hooks on named layers, pooled embeddings out."""

from __future__ import annotations

import contextlib
import logging
import threading
from types import TracebackType

import numpy as np
import torch
from torch import nn

from lookalike.errors import InvalidArgument

from .engines import OnnxEngine
from .hooks import FeatureHooks, l2_normalize, pool
from .spec import OUTPUT_LAYER, PRECISIONS, BackboneSpec

log = logging.getLogger(__name__)


def best_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Backbone:
    """A frozen model that turns a batch of preprocessed images into one vector per layer.

    `spec.dims` gives every layer's width before the first batch (measured by a dummy forward).
    `forward` and `embed` run on `engine` when one is set (the same vectors within 1e-3 cosine);
    `feature_maps` always runs torch.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        device: torch.device,
        precision: str = "auto",
    ) -> None:
        # channels_last: measured 2-3x faster for convnets on this 2-core CPU, and the GPU's preference
        self.model = (
            model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
        )
        self.device = device
        self.autocast_dtype = _autocast_dtype(device, precision)
        self._sources = {layer: spec.split(layer) for layer in spec.layers}  # module, pooling
        hooked = [module for module, _ in self._sources.values() if module != OUTPUT_LAYER]
        self.hooks = FeatureHooks(self.model, list(dict.fromkeys(hooked)))
        self.engine: OnnxEngine | None = None  # set by `engines.use_engine`; None runs torch
        self._lock = threading.Lock()
        self.spec = spec
        if not spec.dims:
            self.spec = _with_dims(spec, self._dims())

    def _dims(self) -> dict[str, int]:
        size = self.spec.preprocess.crop
        dummy = torch.zeros(1, 3, size, size, device=self.device)
        try:
            vectors = self.forward(dummy)
        except RuntimeError as error:
            raise InvalidArgument(
                f"{self.spec.backbone} cannot run at input size {size}: {error}"
            ) from error
        return {layer: int(v.shape[1]) for layer, v in vectors.items()}

    @property
    def engine_name(self) -> str:
        """What runs `forward` and `embed`: ``onnx`` (ONNX Runtime) or ``torch`` (eager)."""
        return "torch" if self.engine is None else "onnx"

    def traceable_vectors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The vectors as a plain function of pixels (no lock, device move or inference mode).

        What `forward` computes in torch, and what an exporter traces (`engines.ExportedVectors`).
        """
        output = self.model(batch)
        captured = self.hooks.pop()
        captured[OUTPUT_LAYER] = output
        return {
            layer: self._vector(captured[module], pooling)
            for layer, (module, pooling) in self._sources.items()
        }

    def _vector(self, features: torch.Tensor, pooling: str) -> torch.Tensor:
        vector = pool(features, pooling).float()
        return l2_normalize(vector) if self.spec.normalize else vector

    def feature_maps(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw (unpooled) output of every spec layer, by name, on the model's device (torch)."""
        with self._lock, torch.inference_mode(), self._autocast():  # the hooks hold one forward
            batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            output = self.model(batch)
            captured = self.hooks.pop()
        captured[OUTPUT_LAYER] = output
        return {layer: captured[module] for layer, (module, _) in self._sources.items()}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled (and optionally L2-normalised) float32 vectors by layer, on the model's device."""
        if self.engine is not None:
            return {layer: torch.from_numpy(v) for layer, v in self.embed(batch).items()}
        with self._lock, torch.inference_mode(), self._autocast():
            batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            return self.traceable_vectors(batch)

    def embed(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """Like `forward`, as float32 NumPy arrays on the host."""
        if self.engine is not None:
            return self.engine.run(batch.detach().cpu().numpy())
        return {layer: v.cpu().numpy() for layer, v in self.forward(batch).items()}

    def close(self) -> None:
        self.hooks.remove()

    def __enter__(self) -> Backbone:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    choices = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISIONS:
        raise InvalidArgument(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return choices[precision]


def _with_dims(spec: BackboneSpec, dims: dict[str, int]) -> BackboneSpec:
    return BackboneSpec(**{**spec.__dict__, "dims": dims})
