"""The embedder: a frozen pretrained backbone, forward hooks on named layers, batch extraction.

Exports load lazily: the store reads `BackboneSpec` without importing torch.
"""

from lookalike.lazy import lazy_exports

_WHERE = {
    "Backbone": "backbone",
    "best_device": "backbone",
    "backbone_from_spec": "build",
    "get_backbone": "build",
    "list_layers": "build",
    "spec_arguments": "build",
    "FeatureHooks": "hooks",
    "pool": "hooks",
    "DEFAULT_BACKBONE": "registry",
    "create_model": "registry",
    "list_backbones": "registry",
    "OUTPUT_LAYER": "spec",
    "BackboneSpec": "spec",
    "Preprocess": "spec",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
