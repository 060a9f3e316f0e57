"""A frozen backbone: classifier replaced by Identity, hooks on named layers, pooled embeddings out."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from lookalike.errors import InvalidArgument, SpecMismatch

from .engines import OnnxEngine, use_engine
from .hooks import FeatureHooks, l2_normalize, pool
from .registry import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, create_model
from .spec import OUTPUT_LAYER, POOLINGS, BackboneSpec, Preprocess

log = logging.getLogger(__name__)

HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def best_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def classifier_name(model: nn.Module) -> str | None:
    """Dotted name of the final classification layer, or None when the model has none.

    timm models say it in their pretrained config; torchvision-style models keep it under one of
    `HEAD_ATTRIBUTES`, as the head itself or as the last Linear (else 1x1 Conv) inside it.
    """
    timm_name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if timm_name and isinstance(_get(model, timm_name), nn.Linear | nn.Conv2d):
        return timm_name
    for attribute in HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Linear | nn.Conv2d):
            return attribute
        if isinstance(head, nn.Module):
            for kind in (nn.Linear, nn.Conv2d):
                inner = [n for n, m in head.named_modules() if n and isinstance(m, kind)]
                if inner:
                    return f"{attribute}.{inner[-1]}"
    return None


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def remove_classifier(model: nn.Module) -> str | None:
    """Replace the classifier with `nn.Identity` (timm: `reset_classifier(0)`); returns what went."""
    name = classifier_name(model)
    if hasattr(model, "reset_classifier") and hasattr(model, "num_features"):
        model.reset_classifier(0)
        return name or "reset_classifier(0)"
    if name is None:
        log.info("%s has no classifier to remove; its output is used as is", type(model).__name__)
        return None
    model.set_submodule(name, nn.Identity())
    return name


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint; a classifier of another size (fine-tuned on other classes) is left out."""
    own = model.state_dict()
    head = classifier_name(model)
    head_keys = {k for k in own if head and k.startswith(f"{head}.")}
    resized = {k for k in head_keys if k in state and state[k].shape != own[k].shape}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in resized}, strict=False
    )
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise InvalidArgument(
            f"checkpoint {source} does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


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
        hooked = [layer for layer in spec.layers if layer != OUTPUT_LAYER]
        self.hooks = FeatureHooks(self.model, hooked)
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
        return {layer: self._vector(captured[layer]) for layer in self.spec.layers}

    def _vector(self, features: torch.Tensor) -> torch.Tensor:
        vector = pool(features, self.spec.pooling).float()
        return l2_normalize(vector) if self.spec.normalize else vector

    def feature_maps(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw (unpooled) output of every spec layer, by name, on the model's device (torch)."""
        with self._lock, torch.inference_mode(), self._autocast():  # the hooks hold one forward
            batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            output = self.model(batch)
            captured = self.hooks.pop()
        captured[OUTPUT_LAYER] = output
        return {layer: captured[layer] for layer in self.spec.layers}

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
    if precision not in choices:
        raise InvalidArgument(f"unknown precision {precision!r}; known: auto, {', '.join(choices)}")
    return choices[precision]


def _with_dims(spec: BackboneSpec, dims: dict[str, int]) -> BackboneSpec:
    return BackboneSpec(**{**spec.__dict__, "dims": dims})


def get_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | None = DEFAULT_WEIGHTS,
    layers: Sequence[str] = (OUTPUT_LAYER,),
    pooling: str = "avg",
    normalize: bool = True,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    precision: str = "auto",
    engine: str = "torch",
    collection_dir: str | Path | None = None,
) -> Backbone:
    """Build a frozen backbone ready to embed.

    Args:
        name: a registry name (see `registry`), e.g. ``default``, ``resnet50``, ``timm:vit_small_patch16_224``.
        weights: ``default``, ``None`` (random init), a source-specific id, or a checkpoint path.
        layers: ``embedding`` (the output once the classifier is gone) and/or named submodules.
        pooling: how spatial maps and token sequences become vectors: avg, max, gem or cls.
        normalize: L2-normalise each vector (cosine similarity = inner product).
        device: defaults to the best available (cuda, mps, cpu).
        image_size: crop size override (the resize keeps the weights' ratio), e.g. small for tests.
        precision: autocast on GPU: auto (bf16 where supported, else fp16), fp16, bf16, fp32.
        engine: torch (eager), onnx (ONNX Runtime, CPU), or auto: onnx on a CPU where the
            backbone exports and matches torch, else torch (see `engines.use_engine`).
        collection_dir: the collection whose ``engines/`` folder caches the export (else the user cache).
    """
    if pooling not in POOLINGS:
        raise InvalidArgument(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    if not layers:
        raise InvalidArgument("at least one layer is needed")
    loaded = create_model(name, weights)
    remove_classifier(loaded.model)
    preprocess = loaded.preprocess.scaled_to(image_size) if image_size else loaded.preprocess
    spec = BackboneSpec(
        backbone=loaded.backbone,
        weights=loaded.weights,
        layers=tuple(dict.fromkeys(layers)),
        pooling=pooling,
        normalize=normalize,
        dims={},
        preprocess=preprocess,
    )
    backbone = Backbone(
        loaded.model, spec, torch.device(device) if device else best_device(), precision
    )
    return use_engine(backbone, engine, collection_dir)


def spec_arguments(spec: BackboneSpec) -> dict[str, Any]:
    """The `get_backbone` arguments that rebuild `spec`."""
    return {
        "name": spec.backbone,
        "weights": spec.weights,
        "layers": spec.layers,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "image_size": spec.preprocess.crop,
    }


def backbone_from_spec(
    spec: BackboneSpec,
    device: str | torch.device | None = None,
    precision: str = "auto",
    engine: str = "torch",
    collection_dir: str | Path | None = None,
    **overrides: Any,
) -> Backbone:
    """Rebuild the embedder a collection (or index, classifier) was made with, on `engine`.

    `overrides` (e.g. ``layers=...``) are applied on top; raises `SpecMismatch`, naming the fields,
    when the result differs from `spec` (another backbone asked for, a checkpoint file changed).
    """
    backbone = get_backbone(
        **{**spec_arguments(spec), **overrides}, device=device, precision=precision
    )
    differences = spec.differences(backbone.spec)
    if differences:
        backbone.close()
        raise SpecMismatch(
            f"this differs from the recorded embedder spec: {'; '.join(differences)}"
        )
    return use_engine(backbone, engine, collection_dir)


def list_layers(
    name: str = DEFAULT_BACKBONE, weights: str | None = None, image_size: int | None = None
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, module type, output shape for one image) of every hookable layer, in forward order."""
    loaded = create_model(name, weights)
    remove_classifier(loaded.model)
    model = loaded.model.eval()
    size = image_size or loaded.preprocess.crop
    shapes: dict[str, tuple[int, ...]] = {}
    modules = {n: m for n, m in model.named_modules() if n}

    def record(layer: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            first = output[0] if isinstance(output, tuple | list) else output
            if isinstance(first, torch.Tensor):
                shapes.setdefault(layer, tuple(first.shape[1:]))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in modules.items()]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return [(n, type(modules[n]).__name__, s) for n, s in shapes.items()]


__all__ = [
    "Backbone",
    "BackboneSpec",
    "Preprocess",
    "backbone_from_spec",
    "best_device",
    "get_backbone",
    "list_layers",
    "remove_classifier",
]
