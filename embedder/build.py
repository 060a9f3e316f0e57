"""Build a backbone: from a registry name and options, or from a recorded spec; list its layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lookalike.errors import InvalidArgument, SpecMismatch

from .backbone import Backbone, best_device
from .export import use_engine
from .heads import remove_classifier
from .hooks import trace_outputs
from .registry import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, create_model
from .spec import OUTPUT_LAYER, POOLINGS, BackboneSpec, Preprocess
from .stages import default_stage_layers


def get_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | None = DEFAULT_WEIGHTS,
    layers: Sequence[str] | None = (OUTPUT_LAYER,),
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
        layers: ``embedding`` (the output once the classifier is gone) and/or named submodules,
            each optionally with its own pooling (``blocks.5/gem``); None: the embedding and the
            backbone's deepest inner stages (`stages.default_stage_layers`), what a collection
            caches by default.
        pooling: how spatial maps and token sequences become vectors: avg, max, gem or cls
            (layers named with their own pooling keep it).
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
    if layers is not None and not layers:
        raise InvalidArgument("at least one layer is needed")
    loaded = create_model(name, weights)
    remove_classifier(loaded.model)
    preprocess = loaded.preprocess.scaled_to(image_size) if image_size else loaded.preprocess
    if layers is None:
        layers = (OUTPUT_LAYER, *default_stage_layers(loaded.model, preprocess.crop))
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
    try:
        spec.check_same(
            backbone.spec,
            "the embedder rebuilt",
            "the recorded one",
            "restore the weights or checkpoint file it was made with, or embed into a new collection",
        )
    except SpecMismatch:
        backbone.close()
        raise
    return use_engine(backbone, engine, collection_dir)


def list_layers(
    name: str = DEFAULT_BACKBONE, weights: str | None = None, image_size: int | None = None
) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, module type, output shape for one image) of every hookable layer, in forward order."""
    loaded = create_model(name, weights)
    remove_classifier(loaded.model)
    modules = {n: m for n, m in loaded.model.named_modules() if n}
    traced = trace_outputs(loaded.model, list(modules), image_size or loaded.preprocess.crop)
    return [(n, type(modules[n]).__name__, shape) for n, (_, shape) in traced.items()]


__all__ = [
    "Backbone",
    "BackboneSpec",
    "Preprocess",
    "backbone_from_spec",
    "best_device",
    "get_backbone",
    "list_layers",
    "remove_classifier",
    "spec_arguments",
]
