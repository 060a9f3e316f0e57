"""The embedder: a frozen pretrained backbone, forward hooks on named layers, batch extraction."""

from .backbone import Backbone, best_device
from .build import backbone_from_spec, get_backbone, list_layers, spec_arguments
from .hooks import FeatureHooks, pool
from .registry import DEFAULT_BACKBONE, create_model, list_backbones
from .spec import OUTPUT_LAYER, BackboneSpec, Preprocess

__all__ = [
    "DEFAULT_BACKBONE",
    "OUTPUT_LAYER",
    "Backbone",
    "BackboneSpec",
    "FeatureHooks",
    "Preprocess",
    "backbone_from_spec",
    "best_device",
    "create_model",
    "get_backbone",
    "list_backbones",
    "list_layers",
    "pool",
    "spec_arguments",
]
